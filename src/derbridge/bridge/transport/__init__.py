"""Transports: one port (:class:`~derbridge.bridge.transport.base.Transport`), two adapters — ``sql``
(queue table in the bridge's database) and ``amqp`` (RabbitMQ)."""
