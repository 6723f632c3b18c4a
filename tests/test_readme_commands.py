"""Every command of the README's "The paper's commands" section runs as written (tiny synthetic data, one epoch).

The commands are parsed out of the project's README.md, not copied here, so what a user reads is
what is tested: the training and inference commands, the ablation flag lines (each applied to the
IEMOCAP training command, and checked to reach the run's config.json) and `--testing --overhead`.
Where the original README is at hand (../shared/paper/README_original.md), every command and flag
line of it must appear, verbatim, in the project's README.
"""
import json
import re
import shlex
import shutil
import signal

import pytest

import config
from helpers import REPO, ok, run_script

README = REPO / 'README.md'
ORIGINAL_README = REPO.parent / 'shared' / 'paper' / 'README_original.md'
SECTION = "## The paper's commands"
SCALE = {'IEMOCAP': 0.02, 'MELD': 0.004, 'MOSEI': 0.002}   # 2 / 5 / 5 training dialogues, 1 test dialogue
COMMAND = re.compile(r'^python3? (?:-u )?(train(?:_MOSEI)?\.py)( .*)?$')


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


def commands_section():
    """The text of the README's section of the paper's commands."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find('\n## ', start + len(SECTION))
    return text[start:end if end >= 0 else None]


def readme_commands(text):
    """(script, args) of every train.py / train_MOSEI.py command in the code blocks of text, in order."""
    found = []
    for _, lines in code_blocks(text):
        for line in lines:
            match = COMMAND.match(line.strip())
            if match:
                found.append((match.group(1), shlex.split(match.group(2) or '')))
    return found


def flag_lines(text):
    """Flag variants in the code blocks of text, each (flags, drop --multi_modal): ablations, --overhead.

    'Remove --multi_modal' / 'Do not remove --multi_modal' apply to the variants below them;
    'a or b' lines are alternatives; lines with <placeholders> are not commands.
    """
    variants = []
    for _, lines in code_blocks(text):
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
    extra = ['--synthetic', '--synthetic-scale', SCALE[dataset_of(args)], '--data-dir', data_dir, '--epochs', 1]
    return ok(run_script(script, *args, *extra, cwd=cwd))


def run_in_this_process(args, data_dir, cwd, monkeypatch):
    """train.py's main(argv) on the command plus the synthetic-data and one-epoch flags, in cwd, in this process:
    the flag lines parse and run as on the command line, without each paying train.py's seconds of imports."""
    import train
    monkeypatch.chdir(cwd)
    extra = ['--synthetic', '--synthetic-scale', SCALE[dataset_of(args)], '--data-dir', data_dir, '--epochs', 1]
    handler = signal.getsignal(signal.SIGTERM)
    train.main([str(a) for a in [*args, *extra]])
    assert signal.getsignal(signal.SIGTERM) is handler, 'a run gives SIGTERM back as it found it'


def given_flags(flags):
    """dest -> value of the flags in a flag line, as train.py parses them."""
    parser = config.build_parser()
    parsed = parser.parse_args(flags)
    spelled = {flag.split('=')[0] for flag in flags if flag.startswith('--')}
    return {action.dest: getattr(parsed, action.dest) for action in parser._actions
            if spelled & set(action.option_strings)}


COMMANDS = readme_commands(commands_section())
TRAINING = {}                                  # dataset -> its first training command (the checkpoints' source)
for _script, _args in COMMANDS:
    if '--testing' not in _args:
        TRAINING.setdefault(dataset_of(_args), (_script, _args))
FLAG_LINES = flag_lines(commands_section())


def test_the_readme_lists_the_expected_commands():
    assert sorted(TRAINING) == ['IEMOCAP', 'MELD', 'MOSEI']
    assert sum('--testing' in args for _, args in COMMANDS) == 2       # the MOSEI one lacks --testing
    assert len(FLAG_LINES) >= 15 and (['--testing', '--overhead'], False) in FLAG_LINES


@pytest.mark.skipif(not ORIGINAL_README.is_file(), reason=f"the original README is not at {ORIGINAL_README}")
def test_every_command_of_the_original_readme_is_in_ours():
    original = ORIGINAL_README.read_text()
    assert readme_commands(original) and all(c in COMMANDS for c in readme_commands(original))
    assert all(line in FLAG_LINES for line in flag_lines(original))


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
def test_readme_flag_line_runs_on_the_iemocap_command(index, checkpoints, data_dir, tmp_path, monkeypatch, capsys):
    flags, drop_multi_modal = FLAG_LINES[index]
    script, args = TRAINING['IEMOCAP']
    assert script == 'train.py'
    args = [a for a in args if not (drop_multi_modal and a == '--multi_modal')] + flags
    if '--testing' in flags:
        shutil.copy(checkpoints('IEMOCAP'), tmp_path / 'best_model_IEMOCAP.pth')
        run_in_this_process(args, data_dir, tmp_path, monkeypatch)
        assert 'FLOPs' in capsys.readouterr().out
        return
    run_in_this_process(args + ['--out-dir', 'run'], data_dir, tmp_path, monkeypatch)
    recorded = json.loads((tmp_path / 'run' / 'config.json').read_text())['flags']
    expected = given_flags(flags)
    assert expected and {dest: recorded[dest] for dest in expected} == expected
    assert recorded['multi_modal'] == (not drop_multi_modal)
