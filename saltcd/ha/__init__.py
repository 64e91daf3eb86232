"""Several masters, one store: saltcd's records in etcd v3, with a lease lock per
app/env whose revision fences every write and every step (docs/ha.md)."""
