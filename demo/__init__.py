"""Demo Python step handlers for Sluice's example workflows (loaded by default on runners)."""
