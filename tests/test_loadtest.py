"""loadtest.py's bad input, as a user types it: each bad flag value is one line naming the flag (exit 2, no
traceback), and a server that does not answer the session requests is one paragraph. No server runs here
(tests/test_serve.py loads a real one)."""
import socket

import pytest

from helpers import run_script

BAD_FLAGS = {   # flag and value -> the message's words
    ('--session-turns', '-1'): 'argument --session-turns: must be an integer >= 0, got -1',
    ('--clients', '0'): 'argument --clients: must be an integer in 1..256, got 0',
    ('--clients', '257'): 'argument --clients: must be an integer in 1..256, got 257',
    ('--seconds', '0'): 'argument --seconds: must be a number of seconds in (0, 600], got 0',
    ('--turns', '0'): 'argument --turns: must be a positive integer, got 0',
}


def csv(folder):
    path = folder / 'talk.csv'
    path.write_text('dialogue,turn,speaker,text\nd1,0,a,hi\nd1,1,b,yo\n')
    return path


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('flag, value', list(BAD_FLAGS), ids=[' '.join(k) for k in BAD_FLAGS])
def test_a_bad_flag_value_is_one_line_naming_it(tmp_path, flag, value):
    proc = run_script('loadtest.py', 'http://127.0.0.1:8000', csv(tmp_path), flag, value, cwd=tmp_path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert BAD_FLAGS[flag, value] in proc.stderr, proc.stderr


def test_no_server_for_the_session_turns_is_one_paragraph(tmp_path):
    url = f'http://127.0.0.1:{free_port()}'
    proc = run_script('loadtest.py', url, csv(tmp_path), '--turns', 2, '--seconds', 0.2, '--session-turns', 3,
                      '--json', tmp_path / 'out.json', cwd=tmp_path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert f'--session-turns: a session request to {url} failed' in proc.stderr
    assert not (tmp_path / 'out.json').exists()
