"""Cut evenly spaced excerpts from audio files into OUT/<label>/, the label being each
file's folder name, e.g. to measure classification of short clips with
`wavegen score CKPT OUT --classify`.

    python scripts/excerpts.py @runs/NAME/validation_files.txt --seconds 2 -o excerpts/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import soundfile as sf

from wavegen.audio import sf_name
from wavegen.paths import expand_paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="audio files or folders, or @FILE for the paths "
                   "FILE lists (a run's validation_files.txt)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each excerpt")
    p.add_argument("--count", type=int, default=3, help="excerpts per file, evenly spaced")
    p.add_argument("-o", "--out", required=True, help="output folder")
    args = p.parse_args()
    for path in expand_paths(args.files):
        audio, rate = sf.read(sf_name(path), dtype="float32", always_2d=True)
        length = int(args.seconds * rate)
        room = max(0, len(audio) - length)
        for i in range(args.count):
            start = room * (i + 1) // (args.count + 1)
            out = Path(args.out) / path.parent.name / f"{path.stem}_{i}.wav"
            out.parent.mkdir(parents=True, exist_ok=True)
            sf.write(sf_name(out), audio[start : start + length], rate, subtype="PCM_16")
            print(out)


if __name__ == "__main__":
    main()
