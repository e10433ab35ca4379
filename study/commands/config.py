"""``dastudy config show FILE [overrides]`` prints the fully resolved run config; ``dastudy config list`` names the
configs shipped with dastudy (usable by name wherever a config file is expected)."""
from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("config", help="show resolved run configs, list the shipped ones",
                                   description="Inspect run configurations (TOML, `extends` chains, overrides).")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION")
    show = sub.add_parser("show", help="print the fully resolved config (defaults, extends, overrides applied)",
                          description="Print the fully resolved run config as TOML: defaults included, unset "
                                      "optional keys omitted. Strict validation runs first, so bad keys and "
                                      "values are reported with the file, key, value and what is allowed.",
                          epilog="example: dastudy config show synth_adapt adapt.lambda_adv_main=0.01")
    show.add_argument("config", help="a TOML run config, or the name of a shipped one")
    show.add_argument("overrides", nargs="*", help="overrides key.sub=value (values are TOML)")
    show.add_argument("--check", action="store_true",
                      help="also check model/dataset names against the registries and that weight files exist")
    show.set_defaults(func=_show)
    listing = sub.add_parser("list", help="names of the run configs shipped with dastudy",
                             description="The run configs shipped with dastudy: name, adapt.mode, model.name.")
    listing.add_argument("--json", action="store_true", help="print a JSON list of {name, mode, model} instead")
    listing.set_defaults(func=_list)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _show(args) -> int:
    from study.config.files import dump_toml, load_train_config

    cfg = load_train_config(args.config, args.overrides)
    if args.check:
        from trainables.builders import validate_config

        validate_config(cfg, source=str(args.config))
    print(f"# {args.config}{' ' + ' '.join(args.overrides) if args.overrides else ''} (resolved)")
    print(dump_toml(cfg), end="")
    return 0


def _list(args) -> int:
    from study.config.files import load_toml, shipped_names

    rows = []
    for name in shipped_names("configs"):
        data = load_toml(name)
        rows.append({"name": name, "mode": data.get("adapt", {}).get("mode", "adversarial"),
                     "model": data.get("model", {}).get("name", "deeplabv2_resnet101")})
    if getattr(args, "json", False):
        import json

        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']:<32} {row['mode']:<12} {row['model']}")
    return 0
