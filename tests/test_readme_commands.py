"""Every command of the original README runs as written (on tiny synthetic data, one epoch).

The commands are parsed out of ../shared/paper/README_original.md, not copied here, so a
change there is tested as is: the training and inference commands, the ablation flag lines
(each applied to the IEMOCAP training command) and `--testing --overhead`.
"""
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO.parent / 'shared' / 'paper' / 'README_original.md'
SCALE = {'IEMOCAP': 0.02, 'MELD': 0.004, 'MOSEI': 0.002}   # 2 / 5 / 5 training dialogues, 1 test dialogue
COMMAND = re.compile(r'^python3? (?:-u )?(train(?:_MOSEI)?\.py)( .*)?$')

if not README.is_file():
    pytest.skip(f"the original README is not at {README} (a checkout without ../shared)", allow_module_level=True)


def code_blocks(text):
    """(heading, lines) of every ``` block, with the nearest heading above it."""
    blocks, heading = [], ''
    for part_index, part in enumerate(text.split('```')):
        if part_index % 2 == 0:
            headings = re.findall(r'^#+ (.*)$', part, re.M)
            heading = headings[-1] if headings else heading
        else:
            blocks.append((heading, part.split('\n')[1:]))
    return blocks


def readme_commands():
    """(script, args) of every train.py / train_MOSEI.py command of the README, in order."""
    found = []
    for _, lines in code_blocks(README.read_text()):
        for line in lines:
            match = COMMAND.match(line.strip())
            if match:
                found.append((match.group(1), shlex.split(match.group(2) or '')))
    return found


def flag_lines():
    """Flag variants of the Experiments section, each (flags, drop --multi_modal): ablations, --overhead.

    'Remove --multi_modal' / 'Do not remove --multi_modal' apply to the variants below them;
    'a or b' lines are alternatives; lines with <placeholders> are not commands.
    """
    text = README.read_text()
    experiments = text[text.index('## 📉 Experiments'):]
    variants = []
    for _, lines in code_blocks(experiments):
        drop_multi_modal = False
        for line in (line.strip() for line in lines):
            if line == 'Remove --multi_modal':
                drop_multi_modal = True
            elif line == 'Do not remove --multi_modal':
                drop_multi_modal = False
            elif line.startswith('--') and '<' not in line:
                variants += [(shlex.split(v), drop_multi_modal) for v in line.split(' or ')]
    return variants


def dataset_of(args):
    """The --Dataset value of a parsed command (train_MOSEI.py's default when absent)."""
    for i, arg in enumerate(args):
        if arg.startswith('--Dataset='):
            return arg.split('=', 1)[1]
        if arg == '--Dataset':
            return args[i + 1]
    return 'MOSEI'


def run(script, args, data_dir, cwd):
    """The command plus the synthetic-data and one-epoch flags, in cwd; returns the CompletedProcess."""
    extra = ['--synthetic', '--synthetic-scale', str(SCALE[dataset_of(args)]), '--data-dir', str(data_dir),
             '--epochs', '1']
    proc = subprocess.run([sys.executable, str(REPO / script), *args, *extra], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{script} {shlex.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


COMMANDS = readme_commands()
TRAINING = {}                                  # dataset -> its first training command (the checkpoints' source)
for _script, _args in COMMANDS:
    if '--testing' not in _args:
        TRAINING.setdefault(dataset_of(_args), (_script, _args))
FLAG_LINES = flag_lines()


def test_the_readme_lists_the_expected_commands():
    assert sorted(TRAINING) == ['IEMOCAP', 'MELD', 'MOSEI']
    assert sum('--testing' in args for _, args in COMMANDS) == 2       # the MOSEI one lacks --testing
    assert len(FLAG_LINES) >= 15 and (['--testing', '--overhead'], False) in FLAG_LINES


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('data')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory, data_dir):
    """dataset -> checkpoint written by the README's training command for it (run once)."""
    made = {}

    def get(dataset):
        if dataset not in made:
            cwd = tmp_path_factory.mktemp(f'train-{dataset}')
            script, args = TRAINING[dataset]
            run(script, args + ['--out-dir', 'run'], data_dir, cwd)
            made[dataset] = cwd / 'run' / f'best_model_{dataset}.pth'
        return made[dataset]
    return get


@pytest.mark.parametrize('index', range(len(COMMANDS)),
                         ids=[f"{script}-{dataset_of(args)}{'-testing' if '--testing' in args else ''}"
                              for script, args in COMMANDS])
def test_readme_command_runs(index, checkpoints, data_dir, tmp_path):
    script, args = COMMANDS[index]
    dataset = dataset_of(args)
    if (script, args) == TRAINING[dataset]:
        checkpoints(dataset)              # this training command, run (once) by the fixture
        return
    if '--testing' not in args:           # MOSEI's "inference" command, which lacks --testing, trains
        run(script, args + ['--out-dir', 'run'], data_dir, tmp_path)
        return
    shutil.copy(checkpoints(dataset), tmp_path / f'best_model_{dataset}.pth')
    proc = run(script, args, data_dir, tmp_path)
    assert 'weighted F1' in proc.stdout
    assert (tmp_path / 'saved_outputs' / f'utterances_{dataset}.csv').is_file()
    assert (tmp_path / 'saved_features' / f'multimodal_emotions_after_{dataset}.pkl').is_file()


@pytest.mark.parametrize('index', range(len(FLAG_LINES)),
                         ids=[' '.join(flags) + (' (no --multi_modal)' if drop else '') for flags, drop in FLAG_LINES])
def test_readme_flag_line_runs_on_the_iemocap_command(index, checkpoints, data_dir, tmp_path):
    flags, drop_multi_modal = FLAG_LINES[index]
    script, args = TRAINING['IEMOCAP']
    args = [a for a in args if not (drop_multi_modal and a == '--multi_modal')] + flags
    if '--testing' in flags:
        shutil.copy(checkpoints('IEMOCAP'), tmp_path / 'best_model_IEMOCAP.pth')
    else:
        args += ['--out-dir', 'run']
    run(script, args, data_dir, tmp_path)
