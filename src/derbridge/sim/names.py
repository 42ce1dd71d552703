"""Small built-in word lists for the synthetic utility: given names, surnames, streets, cities.

They are deliberately short and hand-written so that the generator needs no download and no data
package. No entry may contain a comma, a double quote or a line break: the generator writes CSV without
quoting (see :mod:`derbridge.sim.generator`), and a test checks it.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class City(NamedTuple):
    """A place where the synthetic utility serves premises, with what a CIS row needs to know of it."""

    name: str
    county: str
    state: str
    time_zone: str
    """IANA zone of the city; consistent with its state (cities in a state's other zone are left out)."""
    latitude: float
    longitude: float
    zip_base: int
    """Lowest ZIP code used for the city; premises get this plus a small offset."""
    area_code: str
    division: str
    """The synthetic utility's operating division the city belongs to."""
    weight: float
    """Relative share of premises, roughly by metro size."""


FIRST_NAMES: Final[tuple[str, ...]] = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
    "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony", "Margaret", "Mark", "Sandra",
    "Donald", "Ashley", "Steven", "Kimberly", "Paul", "Emily", "Andrew", "Donna", "Joshua", "Michelle",
    "Kenneth", "Carol", "Kevin", "Amanda", "Brian", "Dorothy", "George", "Melissa", "Timothy", "Deborah",
    "Ronald", "Stephanie", "Edward", "Rebecca", "Jason", "Sharon", "Jeffrey", "Laura", "Ryan", "Cynthia",
    "Jacob", "Kathleen", "Gary", "Amy", "Nicholas", "Angela", "Eric", "Shirley", "Jonathan", "Anna",
    "Stephen", "Brenda", "Larry", "Pamela", "Justin", "Emma", "Scott", "Nicole", "Brandon", "Helen",
    "Benjamin", "Samantha", "Samuel", "Katherine", "Gregory", "Christine", "Alexander", "Debra", "Frank",
    "Rachel", "Patrick", "Carolyn", "Raymond", "Janet", "Jack", "Catherine", "Dennis", "Maria", "Jerry",
    "Heather", "Tyler", "Diane", "Aaron", "Ruth", "Jose", "Julie", "Adam", "Olivia", "Nathan", "Joyce",
    "Henry", "Virginia", "Douglas", "Victoria", "Zachary", "Kelly", "Peter", "Lauren", "Kyle", "Christina",
    "Noah", "Joan", "Ethan", "Evelyn", "Jeremy", "Judith", "Walter", "Megan", "Christian", "Andrea",
    "Keith", "Cheryl", "Roger", "Hannah", "Terry", "Jacqueline", "Austin", "Martha", "Sean", "Gloria",
    "Gerald", "Teresa", "Carl", "Ann", "Harold", "Sara", "Dylan", "Madison", "Arthur", "Frances", "Lawrence",
    "Kathryn", "Jordan", "Janice", "Jesse", "Jean", "Bryan", "Abigail", "Billy", "Alice", "Bruce", "Judy",
    "Gabriel", "Sophia", "Joe", "Grace", "Logan", "Denise", "Alan", "Amber", "Juan", "Doris", "Albert",
    "Marilyn", "Willie", "Danielle", "Elijah", "Beverly", "Wayne", "Isabella", "Randy", "Theresa", "Vincent",
    "Diana", "Mason", "Natalie", "Roy", "Brittany", "Ralph", "Charlotte", "Bobby", "Marie", "Russell",
    "Kayla", "Bradley", "Alexis", "Philip", "Lori", "Eugene", "Mei", "Luis", "Priya", "Carlos", "Aisha",
    "Wei", "Fatima", "Hiroshi", "Ingrid", "Mateo", "Sofia", "Dmitri", "Lucia", "Kwame", "Ama",
)  # fmt: skip
"""Given names (US-common and a few others)."""

LAST_NAMES: Final[tuple[str, ...]] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green",
    "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez",
    "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart",
    "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson",
    "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson", "Brooks",
    "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes", "Price", "Alvarez",
    "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez", "Powell", "Jenkins",
    "Perry", "Russell", "Sullivan", "Bell", "Coleman", "Butler", "Henderson", "Barnes", "Gonzales", "Fisher",
    "Vasquez", "Simmons", "Romero", "Jordan", "Patterson", "Alexander", "Hamilton", "Graham", "Reynolds",
    "Griffin", "Wallace", "Moreno", "West", "Cole", "Hayes", "Bryant", "Herrera", "Gibson", "Ellis",
    "Tran", "Medina", "Aguilar", "Stevens", "Murray", "Ford", "Castro", "Marshall", "Owens", "Harrison",
    "Fernandez", "McDonald", "Woods", "Washington", "Kennedy", "Wells", "Vargas", "Henry", "Chen", "Freeman",
    "Webb", "Tucker", "Guzman", "Burns", "Crawford", "Olson", "Simpson", "Porter", "Hunter", "Gordon",
    "Mendez", "Silva", "Shaw", "Snyder", "Mason", "Dixon", "Munoz", "Hunt", "Hicks", "Holmes", "Palmer",
    "Wagner", "Black", "Robertson", "Boyd", "Rose", "Stone", "Salazar", "Fox", "Warren", "Mills", "Meyer",
    "Rice", "Schmidt", "Garza", "Daniels", "Ferguson", "Nichols", "Stephens", "Soto", "Weaver", "Ryan",
    "Gardner", "Payne", "Grant", "Dunn", "Kowalski", "Nakamura", "Okafor", "Lindqvist", "Haddad", "Singh",
    "Wong", "Yamamoto", "Novak", "Larsen", "Schultz", "Hoffman", "Becker", "Mensah", "Ivanov", "Rossi",
)  # fmt: skip
"""Surnames (US-common and a few others)."""

STREET_NAMES: Final[tuple[str, ...]] = (
    "Oak", "Maple", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park", "Main", "Walnut",
    "Spruce", "Lincoln", "Jefferson", "Madison", "Adams", "Jackson", "Franklin", "Highland", "Sunset",
    "Ridge", "River", "Meadow", "Forest", "Willow", "Birch", "Chestnut", "Hickory", "Poplar", "Sycamore",
    "Church", "Mill", "Spring", "Center", "Union", "Prospect", "Valley", "Woodland", "Orchard", "Grove",
    "Cherry", "Dogwood", "Magnolia", "Aspen", "Juniper", "Laurel", "Holly", "Lakeview", "Hillcrest",
    "Fairview", "Broad", "Market", "Water", "Bridge", "Harbor", "Summit", "Canyon", "Mesa", "Prairie",
    "Meridian", "Railroad", "College", "School", "Garden", "Rosewood", "Briarwood", "Country Club",
    "Jasmine", "Sequoia", "Redwood", "Bluebonnet", "Cottonwood", "Mockingbird", "Cardinal", "Sparrow",
)  # fmt: skip
"""Street names, without the suffix."""

STREET_SUFFIXES: Final[tuple[str, ...]] = ("St", "Ave", "Rd", "Dr", "Ln", "Blvd", "Ct", "Way", "Pl", "Cir")
"""Street suffixes, abbreviated as the US Postal Service does."""

EMAIL_DOMAINS: Final[tuple[str, ...]] = (
    "gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com", "comcast.net",
    "att.net", "example.com", "example.net",
)  # fmt: skip
"""Mail domains; weighted towards the large providers by the generator."""

EMAIL_DOMAIN_WEIGHTS: Final[tuple[float, ...]] = (0.42, 0.16, 0.1, 0.08, 0.08, 0.04, 0.04, 0.03, 0.03, 0.02)
"""Share of each of EMAIL_DOMAINS, in the same order."""

DIVISIONS: Final[tuple[str, ...]] = ("NORTH", "SOUTH", "EAST", "WEST", "CENTRAL")
"""The synthetic utility's operating divisions."""

_CHI = "America/Chicago"
_NYC = "America/New_York"
_DEN = "America/Denver"
_LAX = "America/Los_Angeles"

CITIES: Final[tuple[City, ...]] = (
    # Central time
    City("Chicago", "Cook", "IL", _CHI, 41.8781, -87.6298, 60601, "312", "NORTH", 9.0),
    City("Houston", "Harris", "TX", _CHI, 29.7604, -95.3698, 77002, "713", "SOUTH", 7.0),
    City("Dallas", "Dallas", "TX", _CHI, 32.7767, -96.7970, 75201, "214", "SOUTH", 7.0),
    City("San Antonio", "Bexar", "TX", _CHI, 29.4241, -98.4936, 78205, "210", "SOUTH", 4.0),
    City("Austin", "Travis", "TX", _CHI, 30.2672, -97.7431, 78701, "512", "SOUTH", 3.5),
    City("Minneapolis", "Hennepin", "MN", _CHI, 44.9778, -93.2650, 55401, "612", "NORTH", 3.5),
    City("Saint Paul", "Ramsey", "MN", _CHI, 44.9537, -93.0900, 55101, "651", "NORTH", 1.5),
    City("Kansas City", "Jackson", "MO", _CHI, 39.0997, -94.5786, 64105, "816", "CENTRAL", 2.5),
    City("Saint Louis", "Saint Louis City", "MO", _CHI, 38.6270, -90.1994, 63101, "314", "CENTRAL", 3.0),
    City("Milwaukee", "Milwaukee", "WI", _CHI, 43.0389, -87.9065, 53202, "414", "NORTH", 2.0),
    City("Madison", "Dane", "WI", _CHI, 43.0731, -89.4012, 53703, "608", "NORTH", 1.0),
    City("Omaha", "Douglas", "NE", _CHI, 41.2565, -95.9345, 68102, "402", "CENTRAL", 1.2),
    City("Oklahoma City", "Oklahoma", "OK", _CHI, 35.4676, -97.5164, 73102, "405", "CENTRAL", 1.8),
    City("Tulsa", "Tulsa", "OK", _CHI, 36.1540, -95.9928, 74103, "918", "CENTRAL", 1.2),
    City("Nashville", "Davidson", "TN", _CHI, 36.1627, -86.7816, 37203, "615", "SOUTH", 2.5),
    City("Memphis", "Shelby", "TN", _CHI, 35.1495, -90.0490, 38103, "901", "SOUTH", 1.6),
    City("New Orleans", "Orleans", "LA", _CHI, 29.9511, -90.0715, 70112, "504", "SOUTH", 1.5),
    City("Des Moines", "Polk", "IA", _CHI, 41.5868, -93.6250, 50309, "515", "CENTRAL", 0.9),
    City("Little Rock", "Pulaski", "AR", _CHI, 34.7465, -92.2896, 72201, "501", "SOUTH", 0.8),
    # Eastern time
    City("Atlanta", "Fulton", "GA", _NYC, 33.7490, -84.3880, 30303, "404", "SOUTH", 6.0),
    City("Charlotte", "Mecklenburg", "NC", _NYC, 35.2271, -80.8431, 28202, "704", "EAST", 2.8),
    City("Raleigh", "Wake", "NC", _NYC, 35.7796, -78.6382, 27601, "919", "EAST", 1.5),
    City("Columbus", "Franklin", "OH", _NYC, 39.9612, -82.9988, 43215, "614", "EAST", 2.2),
    City("Cleveland", "Cuyahoga", "OH", _NYC, 41.4993, -81.6944, 44113, "216", "NORTH", 2.0),
    City("Philadelphia", "Philadelphia", "PA", _NYC, 39.9526, -75.1652, 19103, "215", "EAST", 6.0),
    City("Pittsburgh", "Allegheny", "PA", _NYC, 40.4406, -79.9959, 15222, "412", "EAST", 2.3),
    City("Baltimore", "Baltimore City", "MD", _NYC, 39.2904, -76.6122, 21201, "410", "EAST", 2.8),
    City("Richmond", "Richmond City", "VA", _NYC, 37.5407, -77.4360, 23219, "804", "EAST", 1.3),
    City("Tampa", "Hillsborough", "FL", _NYC, 27.9506, -82.4572, 33602, "813", "SOUTH", 3.2),
    City("Orlando", "Orange", "FL", _NYC, 28.5383, -81.3792, 32801, "407", "SOUTH", 2.6),
    City("Jacksonville", "Duval", "FL", _NYC, 30.3322, -81.6557, 32202, "904", "SOUTH", 1.6),
    City("Detroit", "Wayne", "MI", _NYC, 42.3314, -83.0458, 48226, "313", "NORTH", 4.3),
    City("Indianapolis", "Marion", "IN", _NYC, 39.7684, -86.1581, 46204, "317", "CENTRAL", 2.1),
    City("Boston", "Suffolk", "MA", _NYC, 42.3601, -71.0589, 2108, "617", "EAST", 4.9),
    City("Hartford", "Hartford", "CT", _NYC, 41.7658, -72.6734, 6103, "860", "EAST", 1.2),
    # Mountain time
    City("Denver", "Denver", "CO", _DEN, 39.7392, -104.9903, 80202, "303", "WEST", 3.0),
    City("Colorado Springs", "El Paso", "CO", _DEN, 38.8339, -104.8214, 80903, "719", "WEST", 0.8),
    City("Salt Lake City", "Salt Lake", "UT", _DEN, 40.7608, -111.8910, 84101, "801", "WEST", 1.3),
    City("Albuquerque", "Bernalillo", "NM", _DEN, 35.0844, -106.6504, 87102, "505", "WEST", 0.9),
    City("Boise", "Ada", "ID", _DEN, 43.6150, -116.2023, 83702, "208", "WEST", 0.8),
    City("Billings", "Yellowstone", "MT", _DEN, 45.7833, -108.5007, 59101, "406", "WEST", 0.2),
    City("Cheyenne", "Laramie", "WY", _DEN, 41.1400, -104.8202, 82001, "307", "WEST", 0.1),
    # Pacific time
    City("Los Angeles", "Los Angeles", "CA", _LAX, 34.0522, -118.2437, 90012, "213", "WEST", 9.0),
    City("San Diego", "San Diego", "CA", _LAX, 32.7157, -117.1611, 92101, "619", "WEST", 3.3),
    City("San Jose", "Santa Clara", "CA", _LAX, 37.3382, -121.8863, 95113, "408", "WEST", 2.0),
    City("Sacramento", "Sacramento", "CA", _LAX, 38.5816, -121.4944, 95814, "916", "WEST", 2.4),
    City("Fresno", "Fresno", "CA", _LAX, 36.7378, -119.7871, 93721, "559", "WEST", 1.0),
    City("Seattle", "King", "WA", _LAX, 47.6062, -122.3321, 98101, "206", "WEST", 4.0),
    City("Spokane", "Spokane", "WA", _LAX, 47.6588, -117.4260, 99201, "509", "WEST", 0.6),
    City("Portland", "Multnomah", "OR", _LAX, 45.5152, -122.6784, 97204, "503", "WEST", 2.5),
    City("Las Vegas", "Clark", "NV", _LAX, 36.1699, -115.1398, 89101, "702", "WEST", 2.3),
    City("Reno", "Washoe", "NV", _LAX, 39.5296, -119.8138, 89501, "775", "WEST", 0.5),
)
"""Cities served by the synthetic utility, across the four contiguous-US time zones."""
