"""Protocol-faithful fakes of upstream services: real WebSocket servers on 127.0.0.1."""
