"""derbridge: demand-response integration between a customer-side Asset Hub and a grid-side DERMS."""

__version__ = "0.1.0"
