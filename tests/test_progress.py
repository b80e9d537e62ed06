"""Progress where stderr is a log file (lines as the work goes, flushed), on a terminal (bars), and Ctrl-C's one line."""

import io
import sys

import pytest
import torch
from click.testing import CliRunner

from test_features import context
from test_training import fresh_model as tiny_model
from test_training import setup
from transferlab import progress
from transferlab.cli import cli
from transferlab.training import pretrain
from transferlab.training_spec import Training


def test_pretraining_writes_a_line_per_evaluation_while_it_trains(tmp_path, capsys):
    _, manifest, images, val = setup()
    backbone, model = tiny_model(manifest)
    seen_at_log = []  # what stderr held when each evaluation was logged: the line must already be there, not at exit

    def log(metrics, step):
        seen_at_log.append(capsys.readouterr().err)

    pretrain(backbone, model, images, manifest, val, Training(epochs=3, batch_size=16, resolution=16), tmp_path / "c.pt", log)
    assert len(seen_at_log) == 3
    for epoch, text in enumerate(seen_at_log, 1):
        lines = text.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"pretrain epoch {epoch}/3: loss "), text
        assert "img/s" in lines[0] and f"step {epoch * 5}/15" in lines[0] and "ETA 0:" in lines[0]
        assert "━" not in lines[0]  # a plain line, no bar drawing


def test_feature_extraction_writes_a_line_per_split(capsys):
    ctx = context()
    ctx.features("train")
    ctx.features("test")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["features of synthetic_heldout_branching_1_8_heldout4_size16_test6_train10_val4 train",
                                                      "features of synthetic_heldout_branching_1_8_heldout4_size16_test6_train10_val4 test"]
    assert " 40 images in " in lines[0] and " 24 images in " in lines[1] and lines[1].endswith(" images/s")


def test_a_long_step_reports_how_far_it_is_between_its_lines(monkeypatch, capsys):
    clock = iter(range(0, 1000, 20))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with progress.step("features of x train", 100) as shown:
        for _ in range(4):
            shown.advance(25)
        shown.finish("done")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "features of x train: 50/100 images, 1 images/s, ETA 0:00:40"  # every LINE_EVERY_S = 30 s of (fake) time
    assert lines[-1] == "features of x train: done"


def test_on_a_terminal_nested_steps_share_one_bar_display(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(progress, "console", progress.Console(file=screen, force_terminal=True, width=120))
    with progress.step("transfer 1/2 linear on t", announce=True) as outer:
        with progress.step("features of t train", 10) as inner:  # rich allows one live display: nesting must not raise
            inner.advance(10)
            inner.finish("10 images")
        outer.finish("test_top1 50")
    text = screen.getvalue()
    assert "transfer 1/2 linear on t" in text and "features of t train" in text and "test_top1 50" in text
    assert progress._shared == []  # the display stopped with its last step


def test_ctrl_c_ends_with_one_line_saying_how_to_resume(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("transferlab.pipeline.main_run", interrupted)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    argv = ["run", "--backbone", "timm(model='resnet10t')", "--tasks", "linear | knn"]
    monkeypatch.setattr(sys, "argv", ["transferlab", *argv])
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 130
    lines = result.stderr.splitlines()
    assert lines == [lines[-1]] and "Traceback" not in result.output
    assert lines[0].startswith("Interrupted: what finished is kept. To resume, rerun ")
    assert "transferlab run --backbone \"timm(model='resnet10t')\" --tasks 'linear | knn' (" in lines[0]  # pastes back as it was
    assert "finished runs are reused, the stopped one resumes" in lines[0]


def test_ctrl_c_under_mlflow_run_says_to_rerun_that_command(monkeypatch):
    monkeypatch.setattr("transferlab.pipeline.pretrain_run", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc")
    result = CliRunner().invoke(cli, ["pretrain"])
    assert result.exit_code == 130 and "rerun the same `mlflow run` command" in result.stderr


@pytest.mark.parametrize("spec", ["finetune(epochs=2, batch_size=8)"])
def test_finetune_writes_a_line_per_epoch(spec, capsys):
    from transferlab import get_registry

    torch.manual_seed(0)
    get_registry().parse("task", spec).run(context())
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("finetune epoch")]
    assert [line.split(":")[0] for line in lines] == ["finetune epoch 1/2", "finetune epoch 2/2"]
    assert all("img/s" in line and "ETA" in line for line in lines)
