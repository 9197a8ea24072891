"""The technicians' local page (aiohttp, server-rendered): see :mod:`.server`."""
