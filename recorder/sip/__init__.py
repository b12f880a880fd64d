"""SIP for the SIPREC server: messages, a sans-I/O core of transactions and dialogs, and
a thin asyncio adapter that moves its bytes over UDP and TCP."""
