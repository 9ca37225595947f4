"""The worker side: Server and its components (processor, forwarder, recoverer, heartbeat, janitor)."""
