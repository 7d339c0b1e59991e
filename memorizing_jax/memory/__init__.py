"""The external kNN memory: a pytree state and pure functions on it."""
from memorizing_jax.memory import lookup as lookup_lib
from memorizing_jax.memory.lookup import METHODS, NEG_INF, RETRIEVED, LookupResult, lookup
from memorizing_jax.memory.retrieval import Retrieval
from memorizing_jax.memory.shard_local import retrieve, retrieve_then_write
from memorizing_jax.memory.state import (KEY, VALUE, MemoryState, init, reset, ring_positions,
                                         stack_entries, write)

__all__ = ["KEY", "METHODS", "NEG_INF", "RETRIEVED", "VALUE", "LookupResult", "MemoryState",
           "Retrieval", "init", "lookup", "lookup_lib", "reset", "retrieve", "retrieve_then_write",
           "ring_positions", "stack_entries", "write"]
