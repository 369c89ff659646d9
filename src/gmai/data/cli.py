"""``gmai data ...``: the data engine's commands. Thin: parse, then call the library."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


def _generator_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--gen-option {pair!r} must look like key=value")
        options[key.strip()] = value.strip()
    return options


def _secret(path: Path | None, load, new) -> bytes:
    if path is None:
        return new()
    try:
        return load(path)
    except (OSError, ValueError) as error:
        raise typer.BadParameter(str(error), param_hint="--deid-secret-file") from None


def _engine_settings(engine: str, ray_address: str | None, settings: dict) -> dict[str, str | None]:
    """--engine / --ray-address, falling back to the YAML's ``engine`` / ``ray_address``."""
    engine = engine if engine != "local" else str(settings.get("engine", engine))
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine {engine!r}: expected local or ray")
    address = ray_address or settings.get("ray_address")
    return {"engine": engine, "ray_address": str(address) if address else None}


@app.command("build")
def build_command(
    source: list[str] = typer.Option([], "--source", "-s", help="KIND:PATH[?key=value&...]; repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Worker processes (output is identical for any N)."),
    exclude_benchmark: list[str] = typer.Option([], "--exclude-benchmark",
                                                help="Benchmark image folder; matching training images are excluded."),
    generator: str = typer.Option("template", "--generator", help="template (offline, default) or llm."),
    gen_option: list[str] = typer.Option([], "--gen-option",
                                         help="LLM option key=value: base_url, model, api_key, rate, cache_dir, ..."),
    config: Path | None = typer.Option(None, "--config", help="YAML with 'sources' and any of these options."),
    seed: int = typer.Option(0, "--seed", help="Seed for the template generator's choices."),
    max_side: int = typer.Option(512, "--max-side", help="Downscale images whose longer side exceeds this (0: never)."),
    keep_journal: bool = typer.Option(False, "--keep-journal", help="Keep OUT/.build (per-chunk parts) afterwards."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw the card's distribution chart."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    deid_secret_file: Path | None = typer.Option(
        None, "--deid-secret-file",
        help="Keep the de-identification secret here (created when missing) so UIDs and refs map the same way "
             "in later builds; by default a random secret is used once and kept nowhere."),
    retain_patient_characteristics: bool = typer.Option(
        False, "--deid-retain-patient-characteristics",
        help="PS3.15 Retain Patient Characteristics Option (same as --deid-option retain-patient-characteristics)."),
    deid_option: list[str] = typer.Option(
        [], "--deid-option",
        help="A PS3.15 Option, from its Table E.1-1 column (repeatable; every one off by default): "
             "retain-safe-private, retain-uids, "
             "retain-device-identity, retain-institution-identity, retain-patient-characteristics, "
             "retain-full-dates, retain-modified-dates, clean-descriptors, clean-structured-content, "
             "clean-graphics."),
    engine: str = typer.Option("local", "--engine", help="local (process pool) or ray (Ray Data); same output."),
    ray_address: str | None = typer.Option(None, "--ray-address",
                                           help="--engine ray: HOST:PORT or 'auto' of a running cluster "
                                                "(default: start a local one with --workers CPUs)."),
) -> None:
    """Turn specialist datasets into grounded image-text data (JSONL, Parquet, images, card)."""
    from gmai.data.build import BuildConfig, SourceSpec, load_config_file, run_build
    from gmai.data.deid import load_or_create_secret, new_secret
    from gmai.data.engine_ray import RayEngineError
    from gmai.data.sources._common import OptionError

    settings = load_config_file(config) if config else {}
    try:
        specs = list(settings.get("sources", [])) + [SourceSpec.parse(s) for s in source]
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if not specs:
        raise typer.BadParameter("give at least one --source KIND:PATH (or a --config listing sources)")
    options = {**(settings.get("generator_options") or {}), **_generator_options(gen_option)}
    deid_options = [*(settings.get("deid_options") or []), *deid_option] + (
        ["retain_patient_characteristics"] if retain_patient_characteristics else [])
    # a flag given on the command line wins over the YAML file; the YAML wins over the flag's default
    try:
        build_config = BuildConfig(
            sources=specs, out=out, workers=workers,
            generator=generator if generator != "template" else settings.get("generator", generator),
            generator_options=options,
            exclude_benchmarks=[str(x) for x in settings.get("exclude_benchmarks", [])] + exclude_benchmark,
            seed=seed if seed != 0 else int(settings.get("seed", seed)),
            max_side=max_side if max_side != 512 else int(settings.get("max_side", max_side)),
            keep_journal=keep_journal, plots=plots,
            deid_secret=_secret(deid_secret_file, load_or_create_secret, new_secret),
            deid_options=tuple(deid_options),
            **_engine_settings(engine, ray_address, settings),
        )
    except ValueError as error:  # an unknown or contradictory --deid-option
        typer.echo(f"error: --deid-option: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        result = run_build(build_config, progress=not quiet, log=typer.echo)
    except (OptionError, FileNotFoundError, RayEngineError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    stats = result.stats
    typer.echo(f"{stats['records_kept']} records kept, {stats['samples']} samples, {stats['rejects']} rejects "
               f"({stats['leakage']['excluded']} leakage) -> {out} in {result.seconds:.1f}s")
    if result.records_read == 0:
        typer.echo("error: nothing could be read from any source; see rejects.jsonl", err=True)
        raise typer.Exit(1)


from gmai.data.synth import synth_command  # noqa: E402  (owned by the data-sources helper)

app.command("synth")(synth_command)
