"""Reading back what the code under test wrote to TensorBoard."""
import pathlib


def read_scalars(directory) -> dict:
  """{tag: {step: value}} from the TensorBoard event files under `directory`.

  Files are read oldest first, so a step written again by a resumed run keeps
  the resumed run's value.
  """
  # TensorFlow (seconds to import) only for the tests that read event files.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  files = sorted(pathlib.Path(directory).glob("events.out.tfevents.*"),
                 key=lambda p: p.stat().st_mtime_ns)
  for path in files:
    try:
      for event in tf.compat.v1.train.summary_iterator(str(path)):
        for value in event.summary.value:
          number = (float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                    else value.simple_value)
          out.setdefault(value.tag, {})[event.step] = number
    except tf.errors.DataLossError:  # the tail of a file whose writer was killed
      pass
  return out
