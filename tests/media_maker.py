"""Recordings made in the tests with PyAV: a voiced sound whose pitch and loudness are chosen per segment, and
frames holding a real face (scikit-image's astronaut) that drifts a little, so the frames differ; and
conversations of speech synthesised by espeak-ng, each turn's emotion in its prosody and not in its words.

    write_recording('talk.mp4', [(1.0, 140, 0.2), (1.0, 260, 0.6)])    # segments: (seconds, f0 Hz, amplitude)
    write_recording('voice.wav', [(1.0, 140, 0.2)], video=False)
    write_recording('silent.mp4', [(1.0, 0, 0)], audio=False)
    write_recording('nobody.mp4', [(1.0, 140, 0.2)], face=False)        # frames without a face

mp4: H.264 video (libx264, a keyframe every second) and AAC audio; mkv: lossless H.264 (qp 0) and FLAC, so a
segment of a long file holds the same pixels and samples as the clip alone; wav: 16-bit PCM.

    rows = speech_conversations(folder, 40, seed=1, split='train')           # a clip per utterance
    rows = speech_conversations(folder, 12, seed=3, split='test', per_dialogue=True)   # one recording, start / end
"""
import dataclasses
import functools
import subprocess

import av
import numpy as np
import scipy.signal
import skimage.data
import skimage.transform

RATE = 16000
FPS = 25


@functools.lru_cache(maxsize=4)
def face_image(size):
    image = skimage.transform.resize(skimage.data.astronaut(), (size, size), anti_aliasing=True)
    return (image * 255).astype(np.uint8)


def voiced(seconds, f0, amplitude, seed):
    """A voiced sound: harmonics of f0 with a 5 Hz vibrato and an amplitude envelope, plus a little noise."""
    t = np.arange(round(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    if f0 <= 0:
        return (0.001 * rng.standard_normal(len(t))).astype(np.float32)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 2 * t))
    return (amplitude * envelope * wave / 2 + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def frame_at(i, size, face):
    """Frame i: the astronaut shifted by a few pixels (or, without a face, a smooth grey gradient)."""
    if not face:
        ramp = np.linspace(40, 200, size, dtype=np.float32)
        grey = (ramp[None, :] + 20 * np.sin(i / 5 + ramp[:, None] / 30)).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, 2)
    dx, dy = round(4 * np.sin(i / 7)), round(3 * np.cos(i / 11))
    return np.roll(face_image(size), (dy, dx), axis=(0, 1))


def write_recording(path, segments, size=320, video=True, audio=True, face=True, seed=0):
    """Write path (mp4, mkv or wav) holding the segments (seconds, f0, amplitude) one after the other."""
    sound = np.concatenate([voiced(s, f0, a, seed + k) for k, (s, f0, a) in enumerate(segments)])
    frames = (frame_at(i, size, face) for seconds, _, _ in segments   # each segment's frames as a clip alone
              for i in range(round(seconds * FPS)))
    return write_media(path, sound if audio else None, frames if video else None, size)


def write_media(path, sound, frames, size, fps=FPS):
    """Write path (mp4, mkv or wav): sound (float samples at RATE, or None for no audio stream) and frames (size x
    size RGB arrays at fps, or None for no video stream)."""
    path = str(path)
    container = av.open(path, mode='w')
    kind = path.rsplit('.', 1)[-1]
    vstream = astream = None
    if frames is not None and kind != 'wav':
        lossless = {'qp': '0'} if kind == 'mkv' else {}
        vstream = container.add_stream('libx264', rate=fps, options={'g': str(fps), 'preset': 'ultrafast', **lossless})
        vstream.width = vstream.height = size
        vstream.pix_fmt = 'yuv420p'
    if sound is not None:
        codec = {'mp4': 'aac', 'mkv': 'flac', 'wav': 'pcm_s16le'}[kind]
        astream = container.add_stream(codec, rate=RATE, layout='mono')
    if vstream is not None:
        for pts, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format='rgb24')
            frame.pts = pts
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
    if astream is not None:
        fmt = 's16' if kind == 'wav' else astream.codec_context.format.name
        samples = (sound * 32767).astype(np.int16) if fmt == 's16' else sound
        step = 1024
        for start in range(0, len(samples), step):
            chunk = samples[start:start + step]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format=fmt.rstrip('p') if fmt != 'fltp' else 'fltp',
                                               layout='mono')
            frame.sample_rate, frame.pts = RATE, start
            container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
    container.close()
    return path


# ----------------------------------------------------------------------------- conversations with recordings

VOICES = {'calm': (120, 0.12), 'happy': (210, 0.35), 'angry': (300, 0.7)}     # emotion -> (f0 Hz, amplitude)
WORDS = ('okay', 'sure', 'I see', 'right', 'well then', 'fine')               # the same words whatever the emotion


def conversations_with_recordings(folder, n_dialogues, turns, seconds, seed, per_dialogue=False, split=None,
                                  fmt='mp4'):
    """Rows (dialogue, turn, speaker, text, emotion, video[, start, end]) whose emotion is heard (pitch and
    loudness) but not read (the words are drawn independently of it); a clip per utterance, or with
    per_dialogue one recording per dialogue and each turn's start / end in it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in range(n_dialogues):
        emotions = rng.choice(sorted(VOICES), size=turns)
        texts = rng.choice(WORDS, size=turns)
        segments = [(seconds, *VOICES[e]) for e in emotions]
        name = f'{split or "x"}{seed}_{d}'
        if per_dialogue:
            write_recording(folder / f'{name}.{fmt}', segments, seed=seed * 1000 + d * 10)
        for t, (emotion, text) in enumerate(zip(emotions, texts)):
            row = {'dialogue': f'd{d}', 'turn': t, 'speaker': 'AB'[t % 2], 'text': str(text), 'emotion': str(emotion)}
            if per_dialogue:
                row.update(video=f'{folder.name}/{name}.{fmt}', start=round(t * seconds, 3),
                           end=round((t + 1) * seconds, 3))
            else:
                write_recording(folder / f'{name}_{t}.{fmt}', [segments[t]], seed=seed * 1000 + d * 10 + t)
                row['video'] = f'{folder.name}/{name}_{t}.{fmt}'
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- speech from espeak-ng

ESPEAK = 'espeak-ng'            # Debian's espeak-ng (.ci/run installs it)
# emotion -> espeak-ng's pitch (-p, 0-99), speed (-s, words per minute) and amplitude (-a, 0-200): acted prosody,
# the sad voice low, slow and soft, the angry one loud and fast, the happy one high
PROSODY = {'angry': (50, 220, 150), 'happy': (92, 175, 85), 'neutral': (40, 145, 55), 'sad': (5, 105, 25)}
# the words of every utterance, whatever its emotion: what is said carries no label
NEUTRAL_WORDS = ('the', 'report', 'is', 'on', 'table', 'we', 'will', 'meet', 'at', 'noon', 'train', 'leaves',
                 'from', 'platform', 'four', 'a', 'window', 'seat', 'please', 'send', 'me', 'file', 'this',
                 'morning', 'door', 'opens', 'two', 'blue', 'folder', 'near', 'desk', 'it', 'was', 'tuesday',
                 'paper', 'in', 'box', 'they', 'walked', 'home', 'after', 'lunch', 'numbers', 'are', 'ready')
ESPEAK_VOICES = ('en+m1', 'en+m3', 'en+m7', 'en+f1', 'en+f2', 'en+f4')     # espeak-ng's variants: one per speaker
SPEECH_FPS = 10                                                     # a video call's frame rate
FRAME = RATE // SPEECH_FPS                                          # samples per video frame
NAMES = ('Ann', 'Ben', 'Cora', 'Dev', 'Eli', 'Fay', 'Gus', 'Hana')


def speak(text, voice, pitch, speed, amplitude):
    """espeak-ng's speech of text as float samples at RATE (it synthesises at 22,050 Hz)."""
    args = [ESPEAK, '--stdout', '-v', voice, '-p', str(pitch), '-s', str(speed), '-a', str(amplitude), text]
    wav = subprocess.run(args, capture_output=True, check=True).stdout
    samples = np.frombuffer(wav[wav.index(b'data') + 8:], np.int16) / 32768    # --stdout: RIFF header, then PCM
    return scipy.signal.resample_poly(samples, RATE // 50, 441).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Speaker:
    """A person: a voice (espeak-ng variant, pitch offset, speed factor, microphone gain) and a look (how the
    camera frames the same face: zoom, offset, mirror, brightness)."""
    voice: str
    pitch: float
    speed: float
    gain: float
    look: tuple


def random_speaker(rng):
    look = (float(rng.uniform(0.85, 1.0)), int(rng.integers(-20, 21)), int(rng.integers(-20, 21)),
            bool(rng.integers(2)), float(rng.uniform(0.8, 1.15)))
    return Speaker(str(rng.choice(ESPEAK_VOICES)), float(rng.normal(0, 3)), float(rng.uniform(0.93, 1.07)),
                   float(rng.uniform(0.7, 0.9)), look)


@functools.lru_cache(maxsize=64)
def framed_face(size, look):
    """The astronaut as one speaker's camera frames her: a square crop (zoom, offset), mirrored or not, lit
    brighter or darker."""
    zoom, dx, dy, mirror, light = look
    image = skimage.data.astronaut()
    side = round(image.shape[0] * zoom)
    top, left = (np.clip(image.shape[0] // 2 - side // 2 + d, 0, image.shape[0] - side) for d in (dy, dx))
    crop = skimage.transform.resize(image[top:top + side, left:left + side], (size, size), anti_aliasing=True)
    crop = crop[:, ::-1] if mirror else crop
    return (crop * 255 * light).clip(0, 255).astype(np.uint8)


def utterance(rng, speaker, emotion, noise):
    """(text, samples, frame count) of one turn: 2 to 7 neutral words said with the emotion's prosody, jittered
    per utterance, with 0.1 to 0.3 s of silence either side, room noise of standard deviation noise throughout,
    and a length of whole video frames."""
    text = ' '.join(rng.choice(NEUTRAL_WORDS, size=int(rng.integers(2, 8))))
    pitch, speed, amplitude = PROSODY[emotion]
    speech = speak(text, speaker.voice, int(np.clip(pitch + speaker.pitch + rng.normal(0, 3), 0, 99)),
                   round(speed * speaker.speed * rng.uniform(0.94, 1.06)),
                   round(amplitude * rng.uniform(0.9, 1.1))) * speaker.gain
    before, after = (round(rng.uniform(0.1, 0.3) * RATE) for _ in range(2))
    frames = -(-(before + len(speech) + after) // FRAME)
    sound = np.zeros(frames * FRAME, np.float32)
    sound[before:before + len(speech)] = speech
    sound += noise * rng.standard_normal(len(sound)).astype(np.float32)
    return text, sound.clip(-1, 1), frames


def face_frames(speaker, frames, size, seed):
    """The speaker's face drifting by a few pixels, as a camera on them sees it."""
    phase = seed % 97
    for i in range(frames):
        dx, dy = round(3 * np.sin((i + phase) / 7)), round(2 * np.cos((i + phase) / 11))
        yield np.roll(framed_face(size, speaker.look), (dy, dx), axis=(0, 1))


def speech_conversations(folder, n_dialogues, seed, split, per_dialogue=False, turns=(4, 8), size=240, cast=0):
    """Rows (dialogue, turn, speaker, text, emotion, video[, start, end]) of two-person dialogues of turns[0] to
    turns[1] turns whose emotion (of 4, uniform, independent turn to turn) is in the prosody of espeak-ng's speech
    and not in the words; 8 people (voices and looks) shared by every call with the same cast; each dialogue a room
    whose noise sits 40 to 55 dB below full scale. A clip per utterance, or with per_dialogue one recording per
    dialogue (the camera on whoever speaks) and each turn's start / end in it; the same seed gives the same
    sounds and frames either way."""
    rng = np.random.default_rng(seed)
    people = [random_speaker(np.random.default_rng([cast, k])) for k in range(len(NAMES))]
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in range(n_dialogues):
        pair = rng.choice(len(people), size=2, replace=False)
        noise = 10 ** (-rng.uniform(40, 55) / 20)
        spoken = []
        for t in range(int(rng.integers(turns[0], turns[1] + 1))):
            emotion = str(rng.choice(sorted(PROSODY)))
            spoken.append((emotion, *utterance(rng, people[pair[t % 2]], emotion, noise)))
        name = f'{split}_{d}'
        clock = 0
        for t, (emotion, text, sound, frames) in enumerate(spoken):
            row = {'dialogue': f'{split}{d}', 'turn': t, 'speaker': NAMES[pair[t % 2]], 'text': text,
                   'emotion': emotion}
            if per_dialogue:
                row.update(video=f'{folder.name}/{name}.mp4', start=round(clock / SPEECH_FPS, 3),
                           end=round((clock + frames) / SPEECH_FPS, 3))
                clock += frames
            else:
                row['video'] = f'{folder.name}/{name}_{t}.mp4'
                images = face_frames(people[pair[t % 2]], frames, size, d * 10 + t)
                write_media(folder / f'{name}_{t}.mp4', sound, images, size, SPEECH_FPS)
            rows.append(row)
        if per_dialogue:
            video = (image for t, (_, _, _, frames) in enumerate(spoken)
                     for image in face_frames(people[pair[t % 2]], frames, size, d * 10 + t))
            write_media(folder / f'{name}.mp4', np.concatenate([turn[2] for turn in spoken]), video, size, SPEECH_FPS)
    return rows
