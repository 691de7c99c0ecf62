"""The ops: pure forward/backward pairs with explicit caches. See npattn.functional."""
