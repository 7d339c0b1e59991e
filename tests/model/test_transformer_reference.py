"""The model fed segment by segment equals a naive per-token reference.

The reference below is written independently of the model code: plain float64 numpy
with a loop over tokens, recomputing every token's attention over its document's
history (its own and the previous segment for local attention with XL cache, all
earlier segments of the document for the memory, which is larger than the document
and read with k at least the number of stored tokens, so top-k retrieves everything).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from memorizing_jax import model as M

from model_reference import t5_causal_bucket  # pylint: disable=g-bad-import-order


def rms_norm(x, scale):
  return x / np.sqrt(np.mean(x * x) + 1e-6) * scale


def gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def unit(x):
  return x / np.sqrt(np.sum(x * x) + 1e-6)


def softmax(s):
  e = np.exp(s - s.max())
  return e / e.sum()


def reference_logits(cfg, params, tokens, doc_start):
  """Logits of one row read as a single stream.

  Args:
    cfg: ModelConfig; params: numpy param tree.
    tokens: [n] ints, the row's whole stream (segments back to back).
    doc_start: [n] ints, position where each token's document begins.
  Returns [n, vocab] float64.
  """
  p = {k: v for k, v in params.items()}
  n, seg = len(tokens), cfg.segment_length
  emb = np.asarray(p["embed"]["embedding"], np.float64)
  x = emb[np.asarray(tokens)]
  knn = {i % cfg.num_layers for i in cfg.knn_layers}
  for layer in range(cfg.num_layers):
    lp = p[f"layer_{layer}"]
    ap = lp["attention"]
    f64 = lambda a: np.asarray(a, np.float64)
    h = np.stack([rms_norm(x[t], f64(lp["pre_attention_norm"]["scale"])) for t in range(n)])
    q = np.einsum("te,ehd->thd", h, f64(ap["query"]["kernel"]))
    k = np.einsum("te,ehd->thd", h, f64(ap["key"]["kernel"]))
    v = np.einsum("te,ehd->thd", h, f64(ap["value"]["kernel"]))
    normalized = cfg.normalize_qk or layer in knn
    if normalized:
      q = np.stack([[unit(q[t, hh]) for hh in range(cfg.num_heads)] for t in range(n)])
      k = np.stack([[unit(k[t, hh]) for hh in range(cfg.num_heads)] for t in range(n)])
      temperature = f64(ap["temperature"])
    else:
      temperature = np.full(cfg.num_heads, 1 / np.sqrt(cfg.head_dim))
    table = f64(ap["relative_position_bias"]["rel_embedding"])
    heads = np.zeros((n, cfg.num_heads, cfg.head_dim))
    for t in range(n):
      segment_start = (t // seg) * seg
      local_from = max(doc_start[t], segment_start - seg if cfg.use_xl_cache else segment_start)
      local = list(range(local_from, t + 1))
      remembered = list(range(doc_start[t], segment_start))  # earlier segments, same doc
      for hh in range(cfg.num_heads):
        scores = np.array([
            temperature[hh] * q[t, hh] @ k[j, hh] + table[t5_causal_bucket(
                t - j, cfg.relative_position_buckets, cfg.relative_position_max_distance), hh]
            for j in local])
        out = softmax(scores) @ v[local, hh]
        if layer in knn:
          gate = 1 / (1 + np.exp(-float(ap["memory"]["gate_bias"][hh])))
          mem = np.zeros(cfg.head_dim)
          if remembered:
            mem_scores = np.array([temperature[hh] * q[t, hh] @ k[j, hh] for j in remembered])
            mem = softmax(mem_scores) @ v[remembered, hh]
          out = gate * mem + (1 - gate) * out
        heads[t, hh] = out
    x = x + np.einsum("thd,hde->te", heads, f64(ap["out"]["kernel"]))
    mp = lp["mlp"]
    for t in range(n):
      hidden = gelu_tanh(rms_norm(x[t], f64(lp["pre_mlp_norm"]["scale"])) @ f64(mp["wi"]["kernel"]))
      x[t] = x[t] + hidden @ f64(mp["wo"]["kernel"])
  final = np.stack([rms_norm(x[t], f64(p["final_norm"]["scale"])) for t in range(n)])
  return final @ emb.T / np.sqrt(cfg.d_model)


# Row 0 reads one document over 3 segments; row 1 starts a new document at segment 1.
SEGMENTS = 3
START_OF_SEQUENCE = np.array([[True, True], [False, True], [False, False]])


def run_model_and_reference(built):
  cfg = built.config
  seg = cfg.segment_length
  tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, SEGMENTS * seg))
  state = M.init_state(cfg, 2)
  model_logits = []
  for s in range(SEGMENTS):
    logits, state = built.apply(built.params, jnp.asarray(tokens[:, s * seg:(s + 1) * seg],
                                                          jnp.int32),
                                state, jnp.asarray(START_OF_SEQUENCE[s]))
    model_logits.append(np.asarray(logits))
  model_logits = np.concatenate(model_logits, axis=1)
  params = {k: v for k, v in built.params.items()}
  for row in range(2):
    doc_start, start = [], 0
    for s in range(SEGMENTS):
      if START_OF_SEQUENCE[s, row]:
        start = s * seg
      doc_start += [start] * seg
    expected = reference_logits(cfg, params, tokens[row], doc_start)
    np.testing.assert_allclose(model_logits[row], expected, rtol=2e-4, atol=2e-4)
  return state


@pytest.mark.parametrize("overrides", [
    {},                                           # XL cache + kNN layer 1
    {"use_xl_cache": False, "knn_layers": (0,)},  # memory without XL cache
    {"knn_layers": (), "normalize_qk": False},    # XL baseline, dot-product attention
    {"knn_layers": (), "use_xl_cache": False},    # plain transformer on segments
])
def test_model_matches_naive_reference(build_model, overrides):
  state = run_model_and_reference(build_model(**overrides))
  for mem in state.memories:  # row 0 wrote 3 segments, row 1 two (after its reset)
    np.testing.assert_array_equal(np.asarray(mem.count), [24, 16])


def test_causal_bucket_matches_t5_formula():
  distances = np.arange(0, 400)
  got = np.asarray(M.causal_bucket(jnp.asarray(distances), 32, 128))
  want = [t5_causal_bucket(int(d), 32, 128) for d in distances]
  np.testing.assert_array_equal(got, want)
  assert int(M.causal_bucket(jnp.asarray(-3), 32, 128)) == 0  # future keys: bucket 0
