"""Build byte-level (vocab 256) ``train.bin`` / ``val.bin`` from a folder of text files.

Usage::

    python -m optaxlab.data.build_corpus SRC_DIR OUT_DIR [--val-fraction 0.05]
        [--suffix .txt --suffix .md] [--max-train-bytes N] [--max-val-bytes N]

Every non-hidden text file under SRC_DIR is used (binary files are skipped); the split is by
file (see ``optaxlab.data.corpus``). Point a config at the result with
``config.data.name = 'memmap'`` and ``config.data.path = OUT_DIR`` (dtype uint8).
"""

from __future__ import annotations

import argparse
import sys

from optaxlab.data import corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optaxlab.data.build_corpus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("src_dir", help="folder of text files (searched recursively)")
    parser.add_argument("out_dir", help="where train.bin, val.bin and meta.json are written")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="fraction of bytes held out for validation (default 0.05)")
    parser.add_argument("--suffix", action="append", default=None,
                        help="only use files ending with this (repeatable), e.g. .txt")
    parser.add_argument("--max-train-bytes", type=int, default=None)
    parser.add_argument("--max-val-bytes", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        docs = corpus.folder_documents(args.src_dir, args.suffix)
        meta = corpus.build(docs, args.out_dir, val_fraction=args.val_fraction,
                            max_train_bytes=args.max_train_bytes,
                            max_val_bytes=args.max_val_bytes, source=str(args.src_dir))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out_dir}: train.bin {meta['train_bytes']:,} tokens ({meta['train_docs']} files), "
          f"val.bin {meta['val_bytes']:,} tokens ({meta['val_docs']} files), uint8, vocab 256")
    return 0


if __name__ == "__main__":
    sys.exit(main())
