"""Logical axis names -> mesh axes (`model/axes.py`), on hand-worked specs and shapes."""
from jax.sharding import PartitionSpec as P

from memorizing_jax.model import axes
from meshes import cpu_mesh  # pylint: disable=g-bad-import-order


def test_mesh_axes_of_reads_each_form_of_a_spec_entry():
  assert axes.mesh_axes_of(None) == ()
  assert axes.mesh_axes_of("data") == ("data",)
  assert axes.mesh_axes_of(("data", "memory")) == ("data", "memory")
  assert axes.mesh_axes_of(["model"]) == ("model",)


def test_fit_spec_drops_the_mesh_axes_that_do_not_divide_their_dimension():
  sizes = {"data": 4, "model": 2, "memory": 1}
  # Everything divides; a short spec leaves the trailing dimensions unsplit.
  assert axes.fit_spec(P("data", "model"), (8, 6, 5), sizes) == (P("data", "model", None), [])
  # 6 rows over 4 devices and 3 heads over 2: both replicated, and reported.
  assert axes.fit_spec(P("data", "model", "memory"), (6, 3, 7), sizes) == (
      P(None, None, "memory"), [(6, ("data",)), (3, ("model",))])
  # Several axes on one dimension divide it together (4 * 2 = 8), or not at all (12).
  assert axes.fit_spec(P(("data", "model")), (8,), sizes) == (P(("data", "model")), [])
  assert axes.fit_spec(P(("data", "model")), (12,), sizes) == (P(None), [(12, ("data", "model"))])
  # An axis the mesh lacks is dropped.
  assert axes.fit_spec(P("pipeline", None), (8, 2), sizes) == (P(None, None),
                                                               [(8, ("pipeline",))])


def test_ambient_spec_places_logical_names_on_the_mesh_that_in_mesh_sets():
  shape = (8, 4, 64, 16)  # a memory's [batch, heads, slots, head_dim]
  assert axes.ambient_spec(axes.MEMORY_AXES, shape) is None  # no mesh
  mesh = cpu_mesh(4, 2)
  spec = lambda shape, *rules: axes.in_mesh(lambda: axes.ambient_spec(axes.MEMORY_AXES, shape),
                                            mesh, *rules)()
  # Default rules: rows over data, heads over model; the mesh has no `memory` axis.
  assert spec(shape) == P("data", "model", None, None)
  assert spec((6, 4, 64, 16)) == P(None, "model", None, None)  # 6 rows do not split 4 ways
  # The rules of the enclosing in_mesh, not the defaults.
  assert spec(shape, (("batch", None), ("heads", "data"))) == P(None, "data", None, None)
  assert axes.ambient_spec(axes.MEMORY_AXES, shape) is None  # gone after the call
