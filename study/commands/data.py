"""``dastudy data``: make the synthetic benchmark, check dataset folders, convert SYNTHIA labels."""
from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Datasets for dastudy.

  synth    write the embedded synthetic two-domain benchmark (SYNTHIA-style source, Cityscapes-style target);
           it stands in for the real datasets on a CPU-only machine
  check    verify a dataset folder (layout, counts per split, labels decode, class histogram); read-only
  prepare  convert SYNTHIA's 16-bit labels once to 8-bit trainId PNGs next to the originals (faster loading)

Real datasets: see docs/data.md for the expected layouts, then `dastudy data check ROOT --dataset NAME`."""


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write WIDTHxHEIGHT, e.g. 192x96") from None
    if not (16 <= width <= 4096 and 16 <= height <= 4096):  # the generator's limits, checked before it starts
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be in 16..4096 pixels")
    return width, height


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed; use a whole number >= {minimum}")
        return value
    parse.__name__ = "count"
    return parse


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="synthetic benchmark, dataset checks, SYNTHIA label conversion",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")

    synth = sub.add_parser(
        "synth", help="write the synthetic two-domain benchmark",
        description="Write the synthetic benchmark to OUT: OUT/source in the SYNTHIA-RAND-CITYSCAPES layout (16-bit "
                    "labels), OUT/target in the Cityscapes layout (real city names, labelIds) and OUT/manifest.json. "
                    "Deterministic: the same seed and sizes give bit-identical files. OUT must be absent or empty; "
                    "if it already holds a benchmark with the same parameters nothing is done. Nothing is ever "
                    "overwritten or deleted. The defaults take a few seconds on a laptop CPU.")
    synth.add_argument("out", metavar="OUT", help="folder to create (e.g. datasets/synthetic)")
    synth.add_argument("--seed", type=int, default=0, help="random seed of the scenes (default: 0)")
    synth.add_argument("--num-source", type=_count(1), default=400, help="source train images (default: 400)")
    synth.add_argument("--num-source-val", type=_count(0), default=40, help="source val images (default: 40)")
    synth.add_argument("--num-target-train", type=_count(1), default=300, help="target train images (default: 300)")
    synth.add_argument("--num-target-val", type=_count(1), default=100, help="target val images (default: 100)")
    synth.add_argument("--source-size", type=_size, default=(192, 112), metavar="WxH",
                       help="source image size (default: 192x112, about SYNTHIA's aspect ratio)")
    synth.add_argument("--target-size", type=_size, default=(192, 96), metavar="WxH",
                       help="target image size (default: 192x96, Cityscapes' 2:1)")
    # the names of data.synthetic.SHIFTS, not imported at start-up (numpy, PIL); a test compares them
    synth.add_argument("--shift", default="default", choices=("default", "mild", "strong", "hard"),
                       help="strength of the target's appearance shift (palette, texture, noise, blur); default: "
                            "the original benchmark, byte for byte")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(func=_synth)

    check = sub.add_parser(
        "check", help="verify a dataset folder (read-only)",
        description="Check a dataset folder: layout, images per split against the published counts (or the "
                    "synthetic benchmark's manifest.json), every image paired with a label, a sample of ~20 "
                    "labels and images decoded (all with --full), and a class histogram. Lists every problem "
                    "found; exit code 1 if there is any. Never writes into the dataset.",
        epilog="Examples: dastudy data check datasets/synthetic/source --dataset synthia; "
               "dastudy data check datasets/cityscapes --dataset cityscapes --full")
    check.add_argument("root", metavar="ROOT", help="the dataset folder")
    check.add_argument("--dataset", required=True, choices=("cityscapes", "synthia", "gta5"),
                       help="which layout ROOT holds")
    check.add_argument("--full", action="store_true", help="decode every file instead of a sample (slow on real data)")
    check.set_defaults(func=_check)

    prepare = sub.add_parser(
        "prepare", help="convert SYNTHIA 16-bit labels to 8-bit trainId PNGs (once)",
        description="Convert ROOT/GT/LABELS/*.png (16-bit, class id in channel 0) to ROOT/GT/LABELS_TRAINID/*.png "
                    "(8-bit Cityscapes trainIds, 255 = ignore). The originals are only read. Readers use the "
                    "converted labels automatically once the conversion has finished. Refuses to overwrite "
                    "existing converted files unless --overwrite is given.")
    prepare.add_argument("root", metavar="ROOT", help="the SYNTHIA-RAND-CITYSCAPES folder")
    prepare.add_argument("--dataset", default="synthia", choices=("synthia",),
                         help="dataset layout (only SYNTHIA needs a conversion; default: synthia)")
    policy = prepare.add_mutually_exclusive_group()
    policy.add_argument("--overwrite", action="store_true", help="convert again over existing converted files")
    policy.add_argument("--skip-existing", action="store_true",
                        help="keep existing converted files (finishes an interrupted conversion)")
    prepare.add_argument("--workers", type=int, default=None, help="decoding processes (default: all CPUs)")
    prepare.set_defaults(func=_prepare)


def _synth(args) -> int:
    from data.synthetic import generate

    result = generate(args.out, seed=args.seed, num_source=args.num_source, num_source_val=args.num_source_val,
                      num_target_train=args.num_target_train, num_target_val=args.num_target_val,
                      source_size=args.source_size, target_size=args.target_size, shift=args.shift,
                      progress=not args.no_progress and sys.stderr.isatty())
    domains = result.manifest["domains"]
    counts = ", ".join(f"{name} {d['counts']['train']}+{d['counts']['val']}" for name, d in domains.items())
    if result.created:
        print(f"wrote the synthetic benchmark to {result.out} ({counts} train+val images, "
              f"{result.bytes_on_disk / 1e6:.1f} MB) in {result.seconds:.1f} s")
    else:
        print(f"{result.out}: the same synthetic benchmark is already present ({counts} images); nothing written")
    print(f"check it with: dastudy data check {result.out / 'source'} --dataset synthia")
    print(f"               dastudy data check {result.out / 'target'} --dataset cityscapes")
    return 0


def _check(args) -> int:
    from data.check import check_dataset

    report = check_dataset(args.root, args.dataset, full=args.full, progress=sys.stderr.isatty())
    print(report.format())
    return 0 if report.ok else 1


def _prepare(args) -> int:
    from data.prepare import prepare_synthia

    existing = "overwrite" if args.overwrite else "skip" if args.skip_existing else "error"
    result = prepare_synthia(args.root, existing=existing, workers=args.workers, progress=sys.stderr.isatty())
    print(f"converted {result.written} label(s) into {result.out_dir} in {result.seconds:.1f} s"
          + (f" ({result.skipped} already converted, kept)" if result.skipped else ""))
    return 0
