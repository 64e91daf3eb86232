"""saltcd on the running master: the runner's and the engines' steps, the
controller wired to Salt (opts, cache, bus, LocalClient: wiring, salt_fleet,
salt_cache), the master config saltcd needs, and the `salt.loader` entry point."""
