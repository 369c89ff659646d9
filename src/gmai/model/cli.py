"""`gmai model fixture FAMILY OUT`: a tiny random-weight checkpoint folder in a family's released format."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)

FIXTURES = {
    "qwen2.5-instruct": "write_qwen25_instruct_lm",  # an LM part (model.llm_path)
    "clip": "write_clip",  # a full CLIP model (model.vision_path)
    "clip-vision": "write_clip",  # a CLIPVisionModel
    "siglip": "write_siglip",
    "qwen2.5-vl": "write_qwen25_vl",  # whole VLMs (model.base) from here on
    "qwen2-vl": "write_qwen2_vl",
    "qwen3-vl": "write_qwen3_vl",
    "llava-1.5": "write_llava15",
    "llava-next": "write_llava_next",
    "llava-onevision": "write_llava_onevision",
    "gemma3": "write_gemma3",  # MedGemma's architecture
    "internvl": "write_internvl",  # transformers-native InternVL (OpenGVLab/InternVL3-*-hf)
}


@app.command("fixture")
def fixture_command(family: str = typer.Argument(..., help=f"One of: {', '.join(FIXTURES)}."),
                    out: str = typer.Argument(..., help="Output folder.")) -> None:
    """Write a tiny random-weight folder in FAMILY's released on-disk format (for tests and dry runs:
    random weights, toy sizes)."""
    from gmai.model import fixtures

    if family not in FIXTURES:
        typer.echo(f"gmai model fixture: unknown family {family!r}; known: {', '.join(FIXTURES)}", err=True)
        raise typer.Exit(2)
    writer = getattr(fixtures, FIXTURES[family])
    path = writer(out, full=False) if family == "clip-vision" else writer(out)
    typer.echo(f"wrote {path} ({family}, random weights)")
