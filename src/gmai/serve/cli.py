"""`gmai serve` (OpenAI-compatible API) and `gmai demo-ui` (Gradio web demo)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_secret(path: Path | None, option: str, env: str) -> str | None:
    """The secret in file ``path`` (surrounding whitespace dropped), else env ``env``, else None: never from
    the command line, where any local user can read it (/proc/PID/cmdline, ps)."""
    if path is None:
        return os.environ.get(env) or None
    try:
        secret = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise typer.BadParameter(f"{option} {path}: cannot read it ({type(err).__name__})") from None
    if not secret:
        raise typer.BadParameter(f"{option} {path} is empty")
    return secret


def read_api_key(path: Path | None) -> str | None:
    """The key from ``path``, else env GMAI_API_KEY, else None."""
    return read_secret(path, "--api-key-file", "GMAI_API_KEY")


def refuse_on_argv(option: str, env: str, file_option: str) -> typer.BadParameter:
    return typer.BadParameter(f"{option} would put the secret in the process list, where any local user can "
                              f"read it: set {env} or give {file_option} FILE")


def serve_command(
    checkpoint: str = typer.Argument(..., help="Local checkpoint folder (gmai or any HF image-text-to-text)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port."),
    api_key_file: Path = typer.Option(None, help="File holding the required bearer key (default: env "
                                                 "GMAI_API_KEY). Never give the key itself on the command "
                                                 "line: any local user can read it there."),
    api_key: str = typer.Option("", hidden=True, help="Refused: see --api-key-file."),
    allowed_root: Path = typer.Option(None, help="Serve local image paths under this folder only "
                                                  "(default: local paths refused)."),
    model_name: str = typer.Option("", help="Model id clients send (default: the checkpoint folder name)."),
    max_batch: int = typer.Option(16, help="Most requests in one generate call."),
    batch_wait_ms: float = typer.Option(10.0, help="How long the first request waits for companions."),
    no_batching: bool = typer.Option(False, "--no-batching", help="One request per generate call."),
    max_queue: int = typer.Option(64, help="Requests in flight before the server answers 503."),
    max_body_mb: float = typer.Option(20.0, help="Largest request body, MiB."),
    max_images: int = typer.Option(8, help="Most images in one request."),
    max_image_pixels: int = typer.Option(25_000_000, help="Most pixels (width x height x frames) per image."),
    max_image_side: int = typer.Option(1344, help="Decoded images are shrunk to this longest side (0: never)."),
    max_tokens_limit: int = typer.Option(1024, help="Largest max_tokens a client may ask for."),
    default_max_tokens: int = typer.Option(256, help="max_tokens when the client gives none."),
    request_timeout: float = typer.Option(120.0, help="Seconds a request may spend in the server."),
    device: str = typer.Option("", help="cpu or cuda (default: cuda when available)."),
    torch_threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default). 1 is much faster "
                                              "for small models on a busy CPU."),
    insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth",
                                          help="Allow a non-loopback host without an API key."),
    max_messages: int = typer.Option(256, help="Most messages in one request."),
    max_connections_per_address: int = typer.Option(128, help="Open connections per client address (beyond: "
                                                              "its oldest idle one is closed)."),
    head_timeout: float = typer.Option(10.0, help="Seconds a client may take to send a request's headers."),
    decode_workers: int = typer.Option(2, help="Processes decoding images (text-only requests never wait "
                                               "on them; costly images: cheap ones have their own lane)."),
    decode_timeout: float = typer.Option(20.0, help="Most CPU seconds to decode one request's images (each "
                                         "request gets less, scaled to its images' size and codec)."),
    decode_memory_mb: int = typer.Option(1024, help="Memory budget of each decoding process, MiB."),
    log_level: str = typer.Option("info", help="Log level (logs never carry request content)."),
) -> None:
    """Serve CHECKPOINT with an OpenAI-compatible API (/v1/models, /v1/chat/completions, /health, /metrics)."""
    from gmai.serve.api import ServeConfig, run_server

    if api_key:
        raise refuse_on_argv("--api-key", "GMAI_API_KEY", "--api-key-file")
    key = read_api_key(api_key_file)
    if key is None and not _is_loopback(host) and not insecure_no_auth:
        raise typer.BadParameter(f"refusing to serve on {host} without an API key: set GMAI_API_KEY or give "
                                 f"--api-key-file (or --insecure-no-auth)")
    if allowed_root is not None and not allowed_root.is_dir():
        raise typer.BadParameter(f"--allowed-root {allowed_root} is not a folder")
    config = ServeConfig(
        model_name=model_name or Path(checkpoint).name, api_key=key,
        allowed_root=allowed_root.resolve() if allowed_root else None,
        max_body_bytes=int(max_body_mb * 1024 * 1024), max_images=max_images, max_image_pixels=max_image_pixels,
        max_image_side=max_image_side,
        max_tokens_limit=max_tokens_limit, default_max_tokens=min(default_max_tokens, max_tokens_limit),
        request_timeout_s=request_timeout, max_batch=1 if no_batching else max_batch, batch_wait_ms=batch_wait_ms,
        max_queue=max_queue, max_messages=max_messages, max_connections_per_address=max_connections_per_address,
        head_timeout_s=head_timeout, decode_workers=decode_workers, decode_timeout_s=decode_timeout,
        decode_memory_mb=decode_memory_mb)
    run_server(checkpoint, config, host=host, port=port, device=device or None, log_level=log_level,
               torch_threads=torch_threads)


def demo_ui_command(
    checkpoint: str = typer.Argument(..., help="Local checkpoint folder, or an OpenAI-compatible base URL."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(7860, help="Port."),
    api_key_file: Path = typer.Option(None, help="File holding the key for an OpenAI-compatible URL (default: "
                                                 "env GMAI_API_KEY). Never give the key on the command line."),
    api_key: str = typer.Option("", hidden=True, help="Refused: see --api-key-file."),
    max_new_tokens: int = typer.Option(256, help="Reply length limit."),
    device: str = typer.Option("", help="cpu or cuda (default: cuda when available)."),
    torch_threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
    password_file: Path = typer.Option(None, help="File holding the demo password, required off loopback "
                                                  "(default: env GMAI_DEMO_PASSWORD). Never give it on the "
                                                  "command line."),
    password: str = typer.Option("", hidden=True, help="Refused: see --password-file."),
    insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth",
                                          help="Allow a non-loopback host without a password."),
) -> None:
    """A Gradio demo: upload PNG/JPEG/DICOM/NIfTI, see the normalised image and the de-identified header,
    chat with the model, with <think> reasoning folded apart from the answer."""
    from gmai.serve.ui import demo_auth, launch_demo

    try:
        if password:
            raise refuse_on_argv("--password", "GMAI_DEMO_PASSWORD", "--password-file")
        if api_key:
            raise refuse_on_argv("--api-key", "GMAI_API_KEY", "--api-key-file")
        secret = read_secret(password_file, "--password-file", "GMAI_DEMO_PASSWORD")
        key = read_api_key(api_key_file)
        demo_auth(host, secret, insecure_no_auth)
    except (typer.BadParameter, ValueError) as error:  # one plain line, never a box that wraps it
        typer.echo(f"error: {getattr(error, 'message', None) or error}", err=True)
        raise typer.Exit(2) from None
    launch_demo(checkpoint, host=host, port=port, api_key=key, max_new_tokens=max_new_tokens,
                device=device or None, torch_threads=torch_threads, password=secret,
                insecure_no_auth=insecure_no_auth)
