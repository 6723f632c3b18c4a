"""reports/tsne_figures.py through tsne_IEMOCAP.py and tsne_MELD.py, run as a user runs them, on small features saved in
--testing's format.

The figures are drawn by the real command line (processes, marked slow: a t-SNE takes seconds); bad input is
checked in this process (main(argv) through utils.run_cli: exit status 2, the message, no figures).
"""
import functools
import os
import pickle

import matplotlib.image
import numpy as np
import pytest

import utils
from helpers import run_script as run_repository_script
from reports import tsne_figures

N_CLASSES = {"IEMOCAP": (6, 2), "MELD": (7, 9)}  # emotions, speakers
FIGURES = [f"{stage}_{colouring}" for stage in ("before", "after") for colouring in ("emotion", "speaker")]


def write_saved_features(folder, dataset, n=60, seed=0, after_rows=None):
    """What train.py --testing writes: four pickled numpy arrays, one row per test utterance."""
    rng = np.random.default_rng(seed)
    n_emotions, n_speakers = N_CLASSES[dataset]
    labels = rng.integers(0, n_emotions, n)
    arrays = {
        "multimodal_emotions_before": rng.normal(size=(n, 40)).astype(np.float32),
        "multimodal_emotions_after": (rng.normal(size=(n_emotions, 16)) * 4)[labels][:after_rows]
        + rng.normal(size=(n, 16))[:after_rows],
        "emotion_labels": labels,
        "speaker_index": rng.integers(0, n_speakers, n),
    }
    os.makedirs(folder, exist_ok=True)
    for stem, array in arrays.items():
        with open(os.path.join(folder, f"{stem}_{dataset}.pkl"), "wb") as f:
            pickle.dump(array, f)


def run_script(dataset, *args, cwd):
    # One OpenMP thread: t-SNE's threads spin and crawl when the test suite shares the cores with other work.
    return run_repository_script(f"tsne_{dataset}.py", *args, cwd=cwd, env=dict(OMP_NUM_THREADS="1"), timeout=300)


def refused(dataset, *args, cwd, monkeypatch, capsys):
    """tsne_<dataset>.py's command line in this process, in cwd, which must exit 2: its output (.out, .err)."""
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as stop:
        utils.run_cli(functools.partial(tsne_figures.main, dataset=dataset), list(args))
    assert stop.value.code == 2
    output = capsys.readouterr()
    assert "error: " in output.err
    return output


def assert_real_png(path):
    """A readable PNG of a plausible size that is not blank and has several colours."""
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300, image.shape
    rgb = image[..., :3].reshape(-1, 3)
    assert (rgb < 0.95).any(axis=1).mean() > 0.01  # some ink on the page
    assert len(np.unique(np.round(rgb * 255), axis=0)) > 5  # colours, not one grey


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["IEMOCAP", "MELD"])
def test_writes_four_figures(tmp_path, dataset):
    write_saved_features(tmp_path / "features", dataset)
    result = run_script(dataset, "--features-dir", "features", "--out-dir", "figs", "--max-iter", "250",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "figs")) == sorted(f"tsne_{dataset}_{f}.png" for f in FIGURES)
    for name in FIGURES:
        assert_real_png(tmp_path / "figs" / f"tsne_{dataset}_{name}.png")


@pytest.mark.slow
def test_defaults_read_saved_features_and_write_figures(tmp_path):
    """`python tsne_IEMOCAP.py` with no arguments, as the original README runs it."""
    write_saved_features(tmp_path / "saved_features", "IEMOCAP", n=40)
    result = run_script("IEMOCAP", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(os.listdir(tmp_path / "figures")) == 4


@pytest.mark.slow
def test_subsample_runs(tmp_path):
    write_saved_features(tmp_path / "saved_features", "MELD", n=80)
    result = run_script("MELD", "--max-points", "30", "--max-iter", "250", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "t-SNE of 30 MELD test utterances" in result.stdout


@pytest.mark.parametrize("dataset", ["IEMOCAP", "MELD"])
def test_missing_features_say_what_to_run(tmp_path, dataset, monkeypatch, capsys):
    err = refused(dataset, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys).err
    assert f"emotion_labels_{dataset}.pkl" in err and "--testing" in err
    assert "Traceback" not in err
    assert not (tmp_path / "figures").exists()


def test_rows_that_disagree_are_a_user_error(tmp_path, monkeypatch, capsys):
    write_saved_features(tmp_path / "saved_features", "IEMOCAP", after_rows=59)
    err = refused("IEMOCAP", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys).err
    assert "multimodal_emotions_after_IEMOCAP.pkl" in err and "Traceback" not in err
    assert not (tmp_path / "figures").exists()


class RunsACommand:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_pickles_with_code_are_refused(tmp_path, monkeypatch, capsys):
    write_saved_features(tmp_path / "saved_features", "IEMOCAP")
    with open(tmp_path / "saved_features" / "speaker_index_IEMOCAP.pkl", "wb") as f:
        pickle.dump(RunsACommand(), f)
    err = refused("IEMOCAP", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys).err
    assert "speaker_index_IEMOCAP.pkl" in err and "system" in err
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("flags, words", [
    (["--seed", "-1"], "argument --seed: must be an integer in 0..4294967295"),
    (["--seed", str(2**32)], "argument --seed: must be an integer in 0..4294967295"),
], ids=["negative seed", "seed too big"])
def test_bad_flags_exit_2_before_any_work(tmp_path, flags, words, monkeypatch, capsys):
    write_saved_features(tmp_path / "saved_features", "IEMOCAP", n=20)
    err = refused("IEMOCAP", *flags, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys).err
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "figures").exists()


def test_an_out_dir_that_is_a_file_exits_2_before_the_t_sne(tmp_path, monkeypatch, capsys):
    write_saved_features(tmp_path / "saved_features", "IEMOCAP", n=20)
    (tmp_path / "figures").write_text("not a folder")
    output = refused("IEMOCAP", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    err = output.err
    assert "Traceback" not in err and "t-SNE of" not in output.out
    assert "cannot write into figures" in err and "is a file, not a folder" in err


@pytest.mark.slow
def test_the_command_line_exits_2_without_a_traceback(tmp_path):
    """The real command line (a process): missing features exit 2 with one message."""
    result = run_script("MELD", cwd=tmp_path)
    assert result.returncode == 2 and "emotion_labels_MELD.pkl" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "figures").exists()
