"""Studies run on top of the `memorizing_jax` package, outside it: each imports the
package as a library and keeps its own gin files, script and report."""
