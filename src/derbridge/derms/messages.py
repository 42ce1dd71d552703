"""The DERMS's inbound messages: the inbox and the handler of each message type it accepts.

Handlers apply a message inside the inbox's transaction (see :mod:`derbridge.infra.inbound`); each flow's
handler lives with its flow's service and registers itself here.
"""

from __future__ import annotations

from derbridge.contracts.envelope import SystemName
from derbridge.derms.adapters.tables import inbox as inbox_table
from derbridge.infra.inbound import Inbox

inbox = Inbox(SystemName.DERMS, inbox_table)
