"""Recordings (owndata/media.py, owndata/media_features.py, owndata/media_jobs.py): times, probing, decoding, segments
of a long file against the same clips alone, the face and its descriptor, tiny random speech and image models, and every
bad-media case of extract_features.py (exit 2, one paragraph naming the CSV, line, dialogue and file, nothing written).
Every recording is made here (media_maker.py); the models are built here."""
import numpy as np
import pytest
import torch
import transformers

import extract_features as X
from media_maker import RATE, write_recording
from owndata import media, media_features
from utils import run_cli


def test_parse_time():
    assert media.parse_time('62.5') == 62.5 and media.parse_time(' ') is None
    assert media.parse_time('00:16:16,059') == pytest.approx(976.059)       # MELD's StartTime
    assert media.parse_time('1:02.5') == 62.5
    for bad in ('soon', '-1', 'nan', '1:2:3:4'):
        with pytest.raises(ValueError):
            media.parse_time(bad)


def test_probe_decode_and_sample_times(tmp_path):
    clip = write_recording(tmp_path / 'a.mp4', [(1.0, 150, 0.3)])
    voice = write_recording(tmp_path / 'a.wav', [(0.5, 150, 0.3)], video=False)
    silent = write_recording(tmp_path / 'silent.mp4', [(0.5, 0, 0)], audio=False)
    info = media.probe(clip)
    assert info.audio[1] == pytest.approx(1.0, abs=0.1) and info.video == pytest.approx((0.0, 1.0), abs=0.05)
    assert media.probe(voice).video is None and media.probe(silent).audio is None
    assert len(media.decode_audio(voice)) == RATE // 2                  # PCM: every sample, no more
    segment = media.decode_audio(voice, 0.1, 0.3)
    np.testing.assert_array_equal(segment, media.decode_audio(voice)[1600:4800])
    frames = media.decode_frames(clip, None, None, 2.0)
    assert len(frames) == 2 and frames[0].shape == (320, 320, 3) and frames[0].dtype == np.uint8
    assert len(media.decode_frames(clip, 0.2, 0.3, 2.0)) == 1           # a short segment: its middle frame
    assert media.sample_times(1.0, 2.0, 4.0) == [1.125, 1.375, 1.625, 1.875]
    assert media.segment_problem(info, 0.5, 0.4, True, True).endswith('end must come after start')
    assert 'outside the recording' in media.segment_problem(info, 3.0, 4.0, True, False)
    assert 'has no audio stream' in media.segment_problem(media.probe(silent), None, None, True, False)


def test_the_face_is_found_and_its_descriptor_follows_the_face(tmp_path):
    face = write_recording(tmp_path / 'face.mp4', [(0.6, 150, 0.3)])
    nobody = write_recording(tmp_path / 'nobody.mp4', [(0.6, 150, 0.3)], face=False)
    spec = {'fps': 4.0}
    vector, info = media_features.utterance_features('visual', spec, (face, None, None))
    assert info == {'frames': 2, 'faces': 2} and vector.shape == (2 * 324 + 1,) and vector[-1] == 1.0
    crop = media_features.largest_face(media.decode_frames(face, None, None, 1.0)[0])
    assert 50 <= crop.shape[0] <= 80 and 50 <= crop.shape[1] <= 80     # the astronaut's face, ~62 px of 320
    empty, info = media_features.utterance_features('visual', spec, (nobody, None, None))
    assert info == {'frames': 2, 'faces': 0} and not empty.any()        # no face: zeros, counted


@pytest.mark.slow
def test_segments_of_one_long_recording_equal_the_clips_alone(tmp_path):
    """Lossless audio (FLAC in mkv) and H.264 video: cut from one file or alone, the same features."""
    parts = [(1.0, 140, 0.2), (1.0, 260, 0.6), (1.0, 200, 0.4)]
    long = write_recording(tmp_path / 'long.mkv', parts, seed=5)
    audio = {'feature_set': 'eGeMAPSv02'}
    for k, part in enumerate(parts):
        clip = write_recording(tmp_path / f'clip{k}.mkv', [part], seed=5 + k)
        for kind, spec in (('audio', audio), ('visual', {'fps': 2.0})):
            cut, _ = media_features.utterance_features(kind, spec, (long, float(k), float(k + 1)))
            alone, _ = media_features.utterance_features(kind, spec, (clip, None, None))
            np.testing.assert_allclose(cut, alone, rtol=1e-3, atol=1e-3, err_msg=f'{kind} of segment {k}')
    low, _ = media_features.utterance_features('audio', audio, (long, 0.0, 1.0))
    high, _ = media_features.utterance_features('audio', audio, (long, 1.0, 2.0))
    assert high[0] > low[0] + 5          # F0 semitone mean (eGeMAPS' first value): 260 Hz above 140 Hz


# ----------------------------------------------------------------------------- tiny models built here

def tiny_speech_model(folder):
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=24, conv_dim=(16, 16), conv_stride=(5, 4),
                                         conv_kernel=(10, 4), num_conv_pos_embeddings=8,
                                         num_conv_pos_embedding_groups=2, vocab_size=8)
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=RATE).save_pretrained(folder)
    return folder


def tiny_image_model(folder):
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
                                    image_size=32, patch_size=8)
    transformers.ViTModel(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={'height': 32, 'width': 32}).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_tiny_speech_and_image_models(tmp_path):
    speech, image = tiny_speech_model(tmp_path / 'w2v'), tiny_image_model(tmp_path / 'vit')
    clip = write_recording(tmp_path / 'a.mp4', [(0.5, 150, 0.3)])
    spec = media_features.audio_spec(X.parse_args(['x.csv', '--out', 'o', '--audio-model', str(speech)]))
    recipe = media_features.media_recipe('audio', spec)
    assert recipe['layers'] == [1, 2] and recipe['model'] == str(speech) and len(recipe['model_sha256']) == 64
    vector, _ = media_features.utterance_features('audio', spec, (clip, None, None))
    model = media_features.loaded('audio', spec)
    inputs = model.processor(media.decode_audio(clip), sampling_rate=RATE, return_tensors='pt')
    with torch.no_grad():
        hidden = model.model(**inputs, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(vector, ((hidden[1][0].mean(0) + hidden[2][0].mean(0)) / 2).numpy(), rtol=1e-5,
                               atol=1e-6)
    spec = {'fps': 2.0, 'model': str(image)}
    vector, info = media_features.utterance_features('visual', spec, (clip, None, None))
    assert vector.shape == (2 * 16 + 1,) and info['faces'] == 1 and vector[-1] == 1.0
    assert media_features.media_recipe('visual', spec)['model_class'] == 'ViTModel'


# ----------------------------------------------------------------------------- bad media: exit 2, nothing written

def write_rows(path, columns, rows):
    header = 'dialogue,turn,speaker,text,emotion,' + ','.join(columns)
    lines = [header] + [f'd,{t},A,hi,joy,' + ','.join(values) for t, values in enumerate(rows)]
    path.write_text('\n'.join(lines) + '\n')
    return path


def cli_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(X.main, [*map(str, argv), '--device', 'cpu', '--workers', '1'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'Traceback' not in err and err.count('\n') == 1
    return err


def test_bad_media_exit_2_name_the_row_and_write_nothing(tmp_path, capsys, encoder_dir):
    media_dir = tmp_path / 'rec'
    media_dir.mkdir()
    good = write_recording(media_dir / 'good.mp4', [(1.0, 150, 0.3)])
    write_recording(media_dir / 'mute.mp4', [(1.0, 150, 0.3)], audio=False)
    write_recording(media_dir / 'voice.wav', [(1.0, 150, 0.3)], video=False)
    (media_dir / 'junk.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + bytes(range(256)) * 4)
    cases = {   # name -> (columns, second row's cells, extra flags, what the message says)
        'missing file': (('video',), ('rec/gone.mp4',), (), 'rec/gone.mp4 does not exist'),
        'undecodable file': (('video',), ('rec/junk.mp4',), (), 'cannot be read as audio or video by FFmpeg'),
        'no audio stream': (('video',), ('rec/mute.mp4',), (), 'has no audio stream'),
        'no video stream': (('video',), ('rec/voice.wav',), (), 'has no video stream'),
        'outside the recording': (('video', 'start', 'end'), ('rec/good.mp4', '2.5', '3.0'), (),
                                  'lies outside the recording'),
        'end before start': (('video', 'start', 'end'), ('rec/good.mp4', '0.6', '0.6'), (), 'end must come after'),
        'bad time': (('video', 'start', 'end'), ('rec/good.mp4', 'soon', '1'), (), "'soon' is neither seconds"),
        'empty audio segment': (('audio', 'start', 'end'), ('rec/voice.wav', '0.999', '1.0'), (),
                                'is shorter than 10 ms'),
        'speech model offline': (('video',), ('rec/good.mp4',), ('--audio-model', tmp_path / 'no-such-model'),
                                 '--audio-model'),
        'image model offline': (('video',), ('rec/good.mp4',), ('--visual-model', tmp_path / 'no-vit'),
                                'no-vit cannot be loaded'),
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, (columns, cells, flags, message) in cases.items():
        first = {'video': str(good), 'audio': str(media_dir / 'voice.wav'), 'start': '0', 'end': '0.5'}
        csv = write_rows(tmp_path / 'train.csv', columns, [[first[c] for c in columns], cells])
        err = cli_error(capsys, [csv, '--out', tmp_path / 'feats', '--text-model', encoder_dir, *flags])
        assert message in err, (name, err)
        if 'model' not in name:
            assert f'{csv}, line 3 (dialogue d): ' in err, (name, err)
            assert name == 'bad time' or f'{media_dir}/{cells[0][4:]}' in err, (name, err)      # the file
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted({*before, 'train.csv'}), name
