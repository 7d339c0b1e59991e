"""The entry point: gin file lookup, every shipped gin file, and gin errors that say what
is wrong."""
import inspect
import pathlib

import gin
import pytest

from memorizing_jax import main
from memorizing_jax.data.config import DataConfig
from memorizing_jax.model.config import ModelConfig
from memorizing_jax.train import loop, optimizer, partitioner
from memorizing_jax.train.trainer_config import TrainerConfig

from tiny_runs import run_entry_point  # pylint: disable=g-bad-import-order

GIN_ROOT = pathlib.Path(main.__file__).resolve().parent.parent / "gin"
ALL_GIN = sorted(str(p.relative_to(GIN_ROOT)) for p in GIN_ROOT.rglob("*.gin"))
# Files that are complete runs with a data file (the others are layers on train.gin).
RUNS = ["quickstart.gin"] + [f for f in ALL_GIN if f.startswith("experiments/table4_")]


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _configs():
  """The configs gin builds (each validates itself on construction)."""
  return {cls.__name__: gin.get_configurable(cls)() for cls in
          (ModelConfig, DataConfig, optimizer.OptimizerConfig, partitioner.MeshConfig,
           TrainerConfig)}


def test_layout_has_every_file_the_issue_names():
  expected = {f"models/{m}.gin" for m in ("tiny_cpu", "small_cpu", "base_200m", "1b", "8b")}
  expected |= {f"memory/{m}.gin" for m in ("none", "xl_only", "mem_1536", "mem_8k", "mem_65k",
                                           "mem_131k", "mem_262k")}
  expected |= {f"data/{d}.gin" for d in ("python_stdlib", "pg19", "arxiv", "github",
                                         "isabelle", "c4_4k")}
  expected |= {"quickstart.gin", "train.gin"}
  assert expected <= set(ALL_GIN)
  assert len([f for f in ALL_GIN if f.startswith("experiments/table4_")]) == 10
  assert len([f for f in ALL_GIN if f.startswith("experiments/table5_")]) >= 2


@pytest.mark.parametrize("name", RUNS)
def test_every_run_file_parses_into_valid_configs(name):
  data = [] if name == "quickstart.gin" else ["data/github.gin"]
  main.parse_gin([name] + data, [], main.gin_search_paths())
  configs = _configs()
  assert configs["OptimizerConfig"].schedule.warmup_steps >= 1


def test_quickstart_is_a_tiny_memory_model_on_the_stdlib():
  main.parse_gin(["gin/quickstart.gin"], [], main.gin_search_paths())
  configs = _configs()
  model = configs["ModelConfig"]
  assert model.use_xl_cache and model.knn_layers and model.num_layers <= 4
  assert configs["DataConfig"].task == "python_stdlib"
  assert model.vocab_size == configs["DataConfig"].vocabulary_size


@pytest.mark.parametrize("memory,xl,slots", [("none", False, None), ("xl_only", True, None),
                                             ("mem_1536", True, 1536), ("mem_8k", True, 8192),
                                             ("mem_65k", True, 65536),
                                             ("mem_131k", True, 131072),
                                             ("mem_262k", True, 262144)])
def test_memory_layers_on_the_base_model(memory, xl, slots):
  main.parse_gin(["train.gin", "models/base_200m.gin", f"memory/{memory}.gin",
                  "data/pg19.gin"], [],
                 main.gin_search_paths())
  model = _configs()["ModelConfig"]
  assert model.use_xl_cache == xl
  if slots is None:
    assert model.knn_layers == ()
  else:
    assert model.knn_layer_indices == (8,) and model.memory_slots == slots  # the 9th of 12


def test_later_bindings_override_the_files():
  main.parse_gin(["gin/quickstart.gin"],
                 ["loop.TrainerConfig.total_steps = 7", "data_config.DataConfig.batch_size = 16"],
                 main.gin_search_paths())
  configs = _configs()
  assert configs["TrainerConfig"].total_steps == 7
  assert configs["DataConfig"].batch_size == 16


def test_gin_files_are_found_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  paths = main.gin_search_paths()
  assert main.resolve_gin_file("gin/quickstart.gin", paths) == str(GIN_ROOT / "quickstart.gin")
  assert main.resolve_gin_file("models/tiny_cpu.gin", paths) == str(
      GIN_ROOT / "models" / "tiny_cpu.gin")
  (tmp_path / "mine.gin").write_text("")
  assert main.resolve_gin_file("mine.gin", main.gin_search_paths()) == str(
      tmp_path / "mine.gin")
  with pytest.raises(FileNotFoundError, match="no_such.gin"):
    main.resolve_gin_file("no_such.gin", paths)


def test_misspelt_parameter_is_named_with_a_suggestion():
  with pytest.raises(main.ConfigError, match=r"(?s)total_stepz.*Did you mean: total_steps"):
    main.parse_gin(["gin/quickstart.gin"], ["loop.TrainerConfig.total_stepz = 3"],
                   main.gin_search_paths())


def test_unknown_configurable_is_named_with_a_suggestion():
  with pytest.raises(main.ConfigError,
                     match=r"(?s)loop.TrainerConfg.*Did you mean: loop.TrainerConfig"):
    main.parse_gin(["gin/quickstart.gin"], ["loop.TrainerConfg.total_steps = 3"],
                   main.gin_search_paths())


def test_bad_value_is_rejected_by_the_config_with_its_name():
  main.parse_gin(["gin/quickstart.gin"], ["partitioner.MeshConfig.data = 0"],
                 main.gin_search_paths())
  with pytest.raises(ValueError, match="MeshConfig.data must be a positive"):
    _configs()


def test_missing_workdir_and_gin_file_are_usage_errors(tmp_path):
  with pytest.raises(main.ConfigError, match="no --gin_file"):
    main.run_training(str(tmp_path), [], [])


def test_load_run_config_builds_every_argument_of_train(tmp_path):
  """The configs `loop.train` takes besides workdir and gin_config, built from the files
  and bindings (the bindings last); a file that binds nothing gives train's defaults."""
  with pytest.raises(main.ConfigError, match=r"^no --gin_file given; start from "
                                             r"--gin_file=gin/quickstart.gin$"):
    main.load_run_config([], ["loop.TrainerConfig.total_steps = 7"])
  arguments = main.load_run_config(["gin/quickstart.gin"],
                                   ["loop.TrainerConfig.total_steps = 7",
                                    "data_config.DataConfig.batch_size = 16"])
  assert sorted(arguments) == ["data", "init_from", "mesh", "model", "optimizer", "trainer"]
  assert arguments["trainer"].total_steps == 7 and arguments["trainer"].log_every == 25
  assert arguments["data"].batch_size == 16 and arguments["data"].task == "python_stdlib"
  assert arguments["model"].memory_slots == 1536  # memory/mem_1536.gin
  assert arguments["optimizer"].schedule.warmup_steps == 50
  assert arguments["init_from"] is None
  gin.clear_config()
  (tmp_path / "extra").mkdir()
  (tmp_path / "extra" / "nothing.gin").write_text("# binds nothing\n")
  defaults = main.load_run_config(["nothing.gin"], [], [str(tmp_path / "extra")])
  assert defaults == {name: p.default for name, p in
                      inspect.signature(loop.train).parameters.items()
                      if name not in ("workdir", "gin_config")}


def test_an_experiment_without_a_data_file_says_to_add_one():
  with pytest.raises(main.ConfigError, match=r"TASK is used but never set.*data/"):
    main.parse_gin(["experiments/table4_512_xl.gin"], [], main.gin_search_paths())


def test_fine_tuning_experiment_asks_for_the_pretrained_run():
  with pytest.raises(main.ConfigError, match=r"PRETRAINED is used but never set"):
    main.parse_gin(["experiments/table5_finetune_mem8k.gin", "data/arxiv.gin"], [],
                   main.gin_search_paths())
  gin.clear_config()
  main.parse_gin(["experiments/table5_finetune_mem8k.gin", "data/arxiv.gin"],
                 ["PRETRAINED = '/runs/x'"], main.gin_search_paths())
  assert gin.query_parameter("loop.train.init_from") is not None


def test_command_line_reports_bad_input_as_one_message(tmp_path, capsys):
  """The entry point exits 1 with the message (no traceback) for a misspelt binding."""
  assert run_entry_point(["--gin_file=gin/quickstart.gin",
                          "--gin_param=loop.TrainerConfig.total_stepz = 3",
                          f"--workdir={tmp_path}"]) == 1
  err = capsys.readouterr().err
  assert "error: gin configuration error" in err and "Did you mean: total_steps" in err
  assert "Traceback" not in err
  assert not (tmp_path / "checkpoints").exists()


def test_print_config_prints_the_operative_config_without_training(capsys):
  status = run_entry_point(["--gin_file=gin/quickstart.gin",
                      "--gin_param=loop.TrainerConfig.total_steps = 7", "--print_config"])
  out = capsys.readouterr().out
  assert status == 0
  # The bindings of train.gin, quickstart.gin and the command line, as config.gin holds them.
  assert "loop.TrainerConfig.total_steps = 7\n" in out
  assert "data_config.DataConfig.task = %TASK\n" in out and "TASK = 'python_stdlib'\n" in out
  assert "loop.train.model = @model_config.ModelConfig()\n" in out


def test_print_config_validates_the_configs_as_the_trainer_does(capsys):
  status = run_entry_point(["--gin_file=gin/quickstart.gin", "--print_config",
                      "--gin_param=partitioner.MeshConfig.data = 0"])
  captured = capsys.readouterr()
  assert status == 1 and captured.out == ""
  assert "error: MeshConfig.data must be a positive" in captured.err


def test_t5x_flag_spellings_are_accepted(tmp_path, capsys):
  """--gin_bindings adds to --gin_param; --gin_search_paths is a comma list of folders."""
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "mine.gin").write_text(
      "include 'quickstart.gin'\nloop.TrainerConfig.total_steps = 3\n")
  status = run_entry_point([f"--gin_search_paths={tmp_path / 'a'},{tmp_path / 'b'}",
                      "--gin_file=mine.gin", "--gin_bindings=loop.TrainerConfig.log_every = 5",
                      "--gin_param=BATCH_SIZE = 4", "--print_config"])
  out = capsys.readouterr().out
  assert status == 0
  assert "loop.TrainerConfig.total_steps = 3\n" in out
  assert "loop.TrainerConfig.log_every = 5\n" in out and "BATCH_SIZE = 4\n" in out


def test_misspelt_macro_is_named_with_a_suggestion():
  with pytest.raises(main.ConfigError, match=r"(?s)'BATCH_SIZ = 4' sets the macro BATCH_SIZ, "
                                             r"which no gin file uses.*Did you mean: BATCH_SIZE"):
    main.parse_gin(["gin/quickstart.gin"], ["BATCH_SIZ = 4"], main.gin_search_paths())


def test_wrong_type_names_the_binding_the_field_type_and_the_value():
  with pytest.raises(main.ConfigError, match=r"data_config.DataConfig.batch_size = 'x' is a str, but "
                                             r"DataConfig.batch_size takes int"):
    main.parse_gin(["gin/quickstart.gin"], ["data_config.DataConfig.batch_size = 'x'"],
                   main.gin_search_paths())


def test_wrong_type_through_a_macro_and_an_optional_field():
  with pytest.raises(main.ConfigError, match=r"data_config.DataConfig.batch_size = %BATCH_SIZE "
                                             r"\(= 8.5\) is a float, but DataConfig."
                                             r"batch_size takes int"):
    main.parse_gin(["gin/quickstart.gin"], ["BATCH_SIZE = 8.5"], main.gin_search_paths())
  gin.clear_config()
  with pytest.raises(main.ConfigError, match=r"loop.TrainerConfig.eval_batches = 'all' is a str, "
                                             r"but TrainerConfig.eval_batches takes "
                                             r"Optional\[int\]"):
    main.parse_gin(["gin/quickstart.gin"], ["loop.TrainerConfig.eval_batches = 'all'"],
                   main.gin_search_paths())
  gin.clear_config()  # An int for a float field, None for an Optional one: accepted.
  main.parse_gin(["gin/quickstart.gin"], ["optimizer.ScheduleConfig.peak_learning_rate = 1",
                                          "loop.TrainerConfig.eval_batches = None"],
                 main.gin_search_paths())


def test_command_line_reports_a_wrong_type_as_one_message(tmp_path, capsys):
  status = run_entry_point(["--gin_file=gin/quickstart.gin", f"--workdir={tmp_path}",
                      "--gin_bindings=data_config.DataConfig.batch_size = 'x'"])
  err = capsys.readouterr().err
  assert status == 1 and "Traceback" not in err
  assert "error: gin configuration error: data_config.DataConfig.batch_size = 'x' is a str" in err
  assert not (tmp_path / "checkpoints").exists()


def _as_before_data_config_moved(config_gin: str) -> str:
  """A config.gin as runs trained before `DataConfig` moved to `memorizing_jax.data.config`
  wrote it: through `memorizing_jax.train.inputs`."""
  old = (config_gin.replace("from memorizing_jax.data import config as data_config",
                            "from memorizing_jax.train import inputs")
         .replace("data_config.DataConfig", "inputs.DataConfig"))
  assert "data_config" not in old and "inputs.DataConfig.task = %TASK\n" in old
  return old


def test_config_gin_of_a_run_from_before_data_config_moved_still_parses(tmp_path):
  """Such a run resumes with its own config.gin, which binds `inputs.DataConfig`."""
  config_gin = main.operative_config(["gin/quickstart.gin"],
                                     ["data_config.DataConfig.batch_size = 16"])
  configs = _configs()
  gin.clear_config()
  (tmp_path / "config.gin").write_text(_as_before_data_config_moved(config_gin))
  main.parse_gin([str(tmp_path / "config.gin")], [], main.gin_search_paths())
  assert _configs() == configs and configs["DataConfig"].batch_size == 16
