"""The command line: each command parses options, calls one library function, renders its result.

Stage logic lives in the library (mpltool/<stage>/stage.py); nothing here does work a test could not
call directly.
"""

import functools
import os
import shlex
import sys
import traceback

import click

from mpltool import __version__, errors, tuning
from mpltool.console import Output
from mpltool.errors import EXIT_CODE_MEANINGS, ExitCode, MpltoolError
from mpltool.export.formats import FORMATS as EXPORT_FORMATS
from mpltool.signals import terminate_as_interrupt

EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join("  {:<4} {}".format(code, text) for code, text in EXIT_CODE_MEANINGS)
FORCE_HELP = ("Overwrite an existing file that mpltool did not create (files other stages recorded and the "
              "manifest are never overwritten).")


class Context:
    def __init__(self, project, json_mode, debug):
        self.project = project
        self.json_mode = json_mode
        self.debug = debug
        self.out = Output(json_mode=json_mode)

    def next_command(self, *words):
        """`mpltool --project P WORDS...`, quoted so it can be pasted into a shell."""
        return " ".join(shlex.quote(str(w)) for w in ("mpltool", "--project", self.project) + words)

    def next_after(self, stage: str, *extra):
        """The command of the stage after `stage` in the lifecycle (manifest/stages.py), `extra` words
        added (the first words of the next stage's command, without its placeholders)."""
        from mpltool.manifest.stages import next_stage

        words = [w for w in next_stage(stage).command if not w.isupper()]
        return self.next_command(*(words[:1] + list(extra) if extra else words))


def _from_click(exc):
    """click's Usage/Try/Error report as one mpltool error: its message, and where the help is."""
    if isinstance(exc, click.exceptions.NoSuchOption) and exc.possibilities:
        message = "{}; did you mean {}?".format(exc.message, " or ".join(sorted(exc.possibilities)))
    else:
        message = exc.format_message()
    message = message.strip().rstrip(".")
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    if isinstance(exc, click.UsageError):
        click_ctx = exc.ctx
        return errors.UsageError(message, hint="see `{} --help`".format(click_ctx.command_path if click_ctx
                                                                         else "mpltool"))
    error = MpltoolError(message)
    error.exit_code = exc.exit_code
    return error


def fail(out, exc, debug):
    """The one way mpltool ends in error: one line on stderr (+ the JSON error object with --json), its code."""
    if isinstance(exc, click.exceptions.Abort):  # click's wrapper of Ctrl-C outside a command body
        exc = KeyboardInterrupt()
    error = _from_click(exc) if isinstance(exc, click.ClickException) else errors.classify(exc)
    if debug and not isinstance(exc, (KeyboardInterrupt, click.ClickException)):
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    if error is None:  # a bug: the only case with a traceback, and only with --debug
        text = str(exc).strip()
        error = MpltoolError("internal error: {}{}".format(type(exc).__name__, ": " + errors.first_line(exc)
                                                           if text else ""),
                             hint=None if debug else "run with --debug for the traceback")
    out.failure(error.exit_code, error.message, error.hint)
    sys.exit(error.exit_code)


def command(func):
    """Run a command body with mpltool's error contract; SIGTERM/SIGHUP are Ctrl-C (exit 130)."""

    @functools.wraps(func)
    @click.pass_obj
    def wrapper(ctx, *args, **kwargs):
        try:
            with terminate_as_interrupt():
                return func(ctx, *args, **kwargs)
        except (Exception, KeyboardInterrupt) as exc:
            fail(ctx.out, exc, ctx.debug)

    return wrapper


class _NamesItsCommand:
    """click's parser raises some usage errors (an option missing its value) without the command they are
    about; attach it, so the hint names the right `--help`."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if exc.ctx is None:
                exc.ctx = ctx
            raise


class MpltoolCommand(_NamesItsCommand, click.Command):
    pass


class MpltoolGroup(_NamesItsCommand, click.Group):
    """The root group: global options anywhere on the line, and click's own errors as mpltool errors.

    Overriding `main` covers both entry points, `run()` and click.testing.CliRunner (which calls `main`).
    """

    command_class = MpltoolCommand
    group_class = type  # subgroups are MpltoolGroups too (only the root hoists global options)

    def global_options(self, args):
        """(global options found in `args`, the other args), scanning up to a literal `--`."""
        flags, valued = set(), set()
        for param in self.params:
            if isinstance(param, click.Option) and not param.is_eager:  # not --help / --version
                (flags if param.is_flag else valued).update(param.opts)
        found, rest = [], []
        index = 0
        while index < len(args):
            arg = args[index]
            if arg == "--":
                rest.extend(args[index:])
                break
            if arg in flags or ("=" in arg and arg.split("=", 1)[0] in valued):
                found.append(arg)
            elif arg in valued:
                found.extend(args[index:index + 2])
                index += 1
            else:
                rest.append(arg)
            index += 1
        return found, rest

    def parse_args(self, ctx, args):
        if ctx.parent is None:
            found, rest = self.global_options(list(args))
            args = found + rest
        return super().parse_args(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        args = sys.argv[1:] if args is None else list(args)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Exception as exc:  # usage errors (and anything raised outside a command body)
            found, _ = self.global_options(args)
            fail(Output(json_mode="--json" in found), exc, "--debug" in found)
        sys.exit(rv if isinstance(rv, int) else 0)  # --help / --version return 0


@click.group("mpltool", cls=MpltoolGroup, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--project", "project", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Project directory holding mpltool.yaml.")
@click.option("--json", "json_mode", is_flag=True,
              help="Print the result (or the error) as one JSON object on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.version_option(__version__, prog_name="mpltool")
@click.pass_context
def main(click_ctx, project, json_mode, debug):
    """mpltool: Meta Pseudo Labels from CIFAR binaries to an Ascend .om, every step checked.

    Global options may also come after the command: `mpltool eval --json`.
    """
    click_ctx.obj = Context(project, json_mode, debug)


# -- data -------------------------------------------------------------------------------------------
@main.group()
def data():
    """Import and validate CIFAR-format data; write the embedded demo data set."""


@data.command("prepare")
@click.option("--cifar", "source", default=None, type=click.Path(),
              help="Directory of CIFAR-10 binary files, or cifar-10-binary.tar.gz itself.")
@click.option("--images", default=None, type=click.Path(),
              help="Image folders: DIR/<domain>/<class>/*.jpg|png (PACS's layout; no domain level: one domain).")
@click.option("--tfrecord", default=None, type=click.Path(),
              help="Folder of TFRecord shards (<split>-00000-of-00008[.tfrecord]) of image/encoded + "
                   "image/class/label records; each split is a domain.")
@click.option("--shards", type=int, default=None,
              help="With --images: store the images as N TFRecord shards per domain instead of as files.")
@click.option("--lists", default=None, type=click.Path(),
              help="With --images: a folder of per-domain list files `relpath label` (PACS's kfold lists).")
@click.option("--recipe", default=None, help="Recipe whose split settings (CIFAR) or input size (images) are the "
                                             "defaults [default: mpl-wrn28-2, with --images masf-pacs-alexnet].")
@click.option("--labelled", "num_labelled", type=int, default=None, help="Labelled records [recipe: num_labelled].")
@click.option("--split", default=None, metavar="SPLIT",
              help="first (N records, MPL reference), balanced (N/10 per class), round-robin (MixMatch's), or a "
                   "MixMatch split name such as cifar10.3@250-5000 [recipe: split].")
@click.option("--seed", type=int, default=None, help="Seed of a balanced or round-robin split [recipe: split_seed].")
@click.option("--valid", "num_valid", type=int, default=None,
              help="Validation records from the unlabelled stream, round-robin only [recipe: num_valid].")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@command
def data_prepare(ctx, source, images, tfrecord, shards, lists, recipe, num_labelled, split, seed, num_valid, force):
    """Validate CIFAR files or image folders, copy them into the project, record hashes, counts and the split."""
    from mpltool.data.sources import get_source
    from mpltool.data.stage import prepare
    from mpltool.errors import UsageError

    given = [(kind, path) for kind, path in (("cifar", source), ("folders", images), ("tfrecord", tfrecord))
             if path is not None]
    if len(given) != 1:
        raise UsageError("give exactly one of --cifar PATH, --images DIR and --tfrecord DIR",
                         hint="see `mpltool data prepare --help`")
    kind, path = given[0]
    if shards is not None and kind != "folders":
        raise UsageError("--shards applies to --images (it writes the images as shards)",
                         hint="see `mpltool data prepare --help`")
    kind = "tfrecord" if shards is not None else kind
    result = prepare(ctx.project, path, kind=kind, recipe=recipe, force=force, note=ctx.out.info,
                     options={"num_labelled": num_labelled, "split": split, "seed": seed, "num_valid": num_valid,
                              "lists": lists, "shards": shards})
    data_source = get_source(kind)
    title, columns, rows, lines = data_source.summary(result)
    ctx.out.table(title, columns, rows)
    for line in lines:
        ctx.out.info(line)
    ctx.out.info("next: " + ctx.next_after("data", "--recipe", result["recipe"],
                                           *data_source.next_train_args(result, result["recipe"])))
    ctx.out.result(result)


@data.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the files [default: <project>/demo-cifar or demo-domains].")
@click.option("--domains", is_flag=True, help="The multi-domain demo: PNG files in four styles (PACS's layout).")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@command
def data_demo(ctx, out_dir, domains, force):
    """Write the embedded demo data set (CIFAR binary format or image folders, generated here, no download)."""
    from mpltool.data.stage import demo

    result = demo(out_dir, ctx.project, force=force, domains=domains)
    ctx.out.info("wrote {} files to {}".format(len(result["files"]), result["out"]))
    ctx.out.info("next: " + result["next"])
    ctx.out.result(result)


# -- status -----------------------------------------------------------------------------------------
@main.command()
@command
def status(ctx):
    """Show every stage of the project: state, times, outputs and metrics."""
    from mpltool.status import project_status

    result = project_status(ctx.project)
    ctx.out.table("mpltool project {}".format(result["project"]),
                  ["stage", "status", "ended", "outputs", "metrics"],
                  [[s["stage"], s["status_text"], s["ended"], s["outputs_text"], s["metrics_text"]]
                   for s in result["stages"]])
    for line in result["notes"]:
        ctx.out.info(line)
    ctx.out.result(result)  # with --json this object (ok: false) is the answer, not an error object
    if result.get("ok") is False:  # a CI gate: a recorded file missing or changed, a stage not done
        problems = result.get("problems") or []
        raise errors.PrerequisiteError("{} problem(s): {}".format(len(problems), "; ".join(problems[:3]) + (
            "; ..." if len(problems) > 3 else "")), hint="re-run the stage that made them")


# -- report -----------------------------------------------------------------------------------------
@main.command()
@click.option("--samples", type=int, default=24, show_default=True,
              help="Test images shown with their predictions, the worst mistakes first (0: none).")
@click.option("--force", is_flag=True, help="Replace a report/ folder that mpltool did not write.")
@command
def report(ctx, samples, force):
    """HTML report of the project in <project>/report/: curves, confusion matrix, predictions, freeze, convert."""
    from mpltool.report import write_report

    result = write_report(ctx.project, samples=samples, force=force, log=ctx.out.info)
    for warning in result["warnings"]:
        ctx.out.warn(warning)
    ctx.out.info(result["index"])  # the last line: the page to open
    ctx.out.result(result)


# -- recipes ----------------------------------------------------------------------------------------
@main.group(invoke_without_command=True)
@click.pass_context
def recipes(click_ctx):
    """List recipes (`mpltool recipes`) or print one resolved (`mpltool recipes show NAME`)."""
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(recipes_list)


@recipes.command("list")
@command
def recipes_list(ctx):
    """List the recipes shipped with mpltool."""
    from mpltool.recipes import available_recipes, load_recipe

    rows = [[name, load_recipe(name).description] for name in available_recipes()]
    ctx.out.table("recipes", ["name", "description"], rows)
    ctx.out.result({"recipes": [{"name": n, "description": d} for n, d in rows]})


@recipes.command("show")
@click.argument("name", default=None, required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key (repeatable).")
@command
def recipes_show(ctx, name, overrides):
    """Print a recipe resolved with its overrides (what `train` would use)."""
    from mpltool.recipes import load_recipe

    recipe = load_recipe(name, overrides)
    fields = recipe.fields
    ctx.out.table("recipe {} ({})".format(recipe.recipe_name, recipe.recipe_path), ["key", "value", "meaning"],
                  [[k, v, fields[k].doc + (" [--set]" if k in recipe.overrides else "")]
                   for k, v in recipe.values.items()])
    ctx.out.result({"name": recipe.recipe_name, "path": recipe.recipe_path, "values": recipe.values,
                    "overrides": recipe.overrides})


# -- train ------------------------------------------------------------------------------------------
@main.command()
@click.option("--recipe", default=None, help="Recipe name or FILE.yaml [default: the project's recorded one, "
              "else mpl-wrn28-2].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key (repeatable).")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu", "npu"]), default="auto", show_default=True)
@click.option("--extend-steps", type=int, default=None, help="Train a finished run N steps further.")
@click.option("--force", is_flag=True, help="Start over: delete this project's checkpoints and training logs.")
@click.option("--nproc", type=int, default=None, help="Data-parallel processes on this host, through Horovod (gloo).")
@click.option("--oversubscribe", is_flag=True, help="Allow --nproc above this host's core count.")
@click.option("--devices", default=None, metavar="IDS", help="Ascend: one process per device of this server "
              "(0-7, 0,1,2,3 ...), gradients all-reduced over HCCL.")
@click.option("--rank-table", type=click.Path(dir_okay=False), default=None,
              help="Ascend: the HCCL rank table [default: written from /etc/hccn.conf for --devices].")
@click.option("--no-tuning", is_flag=True, help="Run with the process as started: no preloaded allocator, "
              "TensorFlow's default thread pools (same as MPLTOOL_TUNING=off; docs/performance.md).")
@command
def train(ctx, recipe, overrides, device, extend_steps, force, nproc, oversubscribe, devices, rank_table,
          no_tuning):
    """Train the recipe's algorithm; resumes from the latest checkpoint. --nproc/--devices: data-parallel."""
    # no_tuning took effect before click ran: run() hands the argv to tuning.reexec_tuned first.
    from mpltool.train.stage import train as train_stage

    def progress_factory(total):
        return ctx.out.progress("train", total)  # off a terminal the trainer logs plain lines instead

    if nproc is not None or devices is not None or rank_table is not None:
        from mpltool.train.launch import launch_training

        if rank_table is not None and devices is None:
            raise errors.UsageError("--rank-table needs --devices (the devices of this server)")
        result = launch_training(ctx.project, recipe=recipe, overrides=overrides, device=device,
                                 extend_steps=extend_steps, force=force, nproc=nproc, oversubscribe=oversubscribe,
                                 devices=devices, rank_table=rank_table, echo=ctx.out.info)
    else:
        result = train_stage(ctx.project, recipe=recipe, overrides=overrides, device=device,
                             extend_steps=extend_steps, force=force, log=ctx.out.info, warn=ctx.out.warn,
                             progress_factory=progress_factory if ctx.out.interactive else None)
    if "rank" in result:  # one process of a data-parallel job: the launcher reports
        ctx.out.info("rank {} of {} finished at step {}".format(result["rank"], result["replicas"],
                                                                 result["steps_done"]))
        return
    metrics = result.get("metrics") or {}
    shown = {"steps": "{}/{}".format(result["steps_done"], result["num_train_steps"])}
    if result.get("replicas", 1) > 1:
        shown["replicas"] = "{} ({}), global batch {}".format(result["replicas"], result["backend"],
                                                              result["global_batch_size"])
    shown.update(("{} {}".format(key[:-len("_top1")].replace("_", " "), "top-1"), value)
                 for key, value in metrics.items() if key.endswith("_top1"))  # every network training built
    shown.update(("{} top-1, median of last 20 evals".format(key[:-len("_top1_median20")]), value)
                 for key, value in metrics.items() if key.endswith("_top1_median20"))
    shown["latest checkpoint"] = (result.get("checkpoints") or {}).get("latest", {}).get("prefix")
    ctx.out.fields("train", shown)
    ctx.out.info("next: " + ctx.next_after("train"))
    ctx.out.result(result)


# -- eval -------------------------------------------------------------------------------------------
@main.command("eval")
@click.option("--target", default=None, help="Which network: one training built (MPL: ema, student, teacher; "
              "supervised/uda: ema, model) [default: the algorithm's, ema].")
@click.option("--model", default=None, help="A checkpoint (prefix, .index or directory) or a frozen .pb "
              "[default: the best checkpoint train recorded for the target].")
@click.option("--batch-size", type=int, default=None, help="Evaluation batch size [recipe: eval_batch_size].")
@command
def eval_command(ctx, target, model, batch_size):
    """Top-1, top-5 and loss over every test image exactly once."""
    from mpltool.eval.stage import evaluate

    result = evaluate(ctx.project, target=target, model=model, batch_size=batch_size)
    source = result["source"]
    described = (source["path"] if source["kind"] != "checkpoint"
                 else "{} {} (step {}, {})".format(source["target"], source["prefix"], source["step"], source["chosen"]))
    ctx.out.fields("eval", {"model": described, "top-1": result["top1"], "top-5": result["top5"],
                            "loss": result["loss"], "images": result["images"],
                            "images/s": round(result["images_per_second"] or 0.0, 1)})
    medians = result.get("training_medians") or {}
    if medians:
        ctx.out.info("during training, median test top-1 of the last N evaluations: " + ", ".join(
            "N={} {:.4f}".format(key[len("last"):], value) for key, value in medians.items()))
    ctx.out.info("next: " + ctx.next_after("eval"))
    ctx.out.result(result)


# -- freeze -----------------------------------------------------------------------------------------
@main.command()
@click.argument("checkpoint", default="ckpt")
@click.option("--target", default=None, help="Which network: one training built (MPL: ema, student, teacher; "
              "supervised/uda: ema, model) [default: the algorithm's, ema].")
@click.option("--batch", type=int, default=1, show_default=True, help="Static batch size of the input.")
@click.option("--output", default=None, type=click.Path(dir_okay=False), help="Where to write the .pb.")
@click.option("--parity-images", type=int, default=1000, show_default=True,
              help="Test images the parity check runs (0 = all).")
@click.option("--tolerance", type=float, default=1e-4, show_default=True, help="Max |logit difference| allowed.")
@click.option("--no-fold", is_flag=True, help="Keep batch norms as ops (default: folded into the convolution "
                                              "before them, as parity-checked as the rest).")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@command
def freeze(ctx, checkpoint, target, batch, output, parity_images, tolerance, no_fold, force):
    """Checkpoint -> frozen GraphDef (.pb), op-checked and parity-checked.

    CHECKPOINT: `ckpt` (the best the manifest records for the target), `latest`, or a checkpoint path.
    """
    from mpltool.freeze.stage import freeze as freeze_stage

    result = freeze_stage(ctx.project, checkpoint=checkpoint, target=target, batch=batch, output=output,
                          parity_images=parity_images, tolerance=tolerance, force=force, fold=not no_fold)
    io, parity = result["io"], result["parity"]
    ctx.out.fields("freeze", {
        "pb": result["pb"], "sha256": result["sha256"],
        "input": "{} {} {} ({})".format(io["input_name"], io["input_shape"], io["input_dtype"], io["input_range"]),
        "outputs": ", ".join("{} {}".format(n, s) for n, s in zip(io["output_names"], io["output_shapes"])),
        "parity": "max |dlogit| {:.3g} <= {:.3g} over {} images, top-1 agreement {:.4f}".format(
            parity["max_abs_logit_diff"], parity["tolerance"], parity["images"], parity["top1_agreement"]),
        "folded": "{} batch norm(s) into their convolutions".format(result["folded_batch_norms"]),
        "next": ctx.next_after("freeze")})
    ctx.out.result(result)


# -- export -----------------------------------------------------------------------------------------
@main.command()
@click.option("--format", "export_format", type=click.Choice(list(EXPORT_FORMATS)), required=True,
              help="Export format (needs the extra `onnx`: tf2onnx, onnx, onnxruntime).")
@click.option("--model", default=None, type=click.Path(dir_okay=False),
              help="A frozen .pb [default: the one the freeze stage recorded, hash-checked].")
@click.option("--output", default=None, type=click.Path(dir_okay=False),
              help="Where to write the .onnx [default: <project>/onnx/<pb name>.onnx].")
@click.option("--parity-images", type=int, default=1000, show_default=True,
              help="Test images the parity check runs (0 = all).")
@click.option("--tolerance", type=float, default=1e-3, show_default=True,
              help="Max |logit difference| allowed between onnxruntime and the .pb.")
@click.option("--opset", type=int, default=11, show_default=True, help="ONNX opset (atc reads 11 to 15).")
@click.option("--force", is_flag=True, help=FORCE_HELP)
@command
def export(ctx, export_format, model, output, parity_images, tolerance, opset, force):
    """Frozen .pb -> .onnx through tf2onnx, checked and parity-checked in onnxruntime against the .pb."""
    from mpltool.export.stage import export as export_stage

    result = export_stage(ctx.project, format=export_format, model=model, output=output,
                          parity_images=parity_images, tolerance=tolerance, opset=opset, force=force)
    io, parity = result["io"], result["parity"]
    ctx.out.fields("export", {
        export_format: result[export_format], "sha256": result["sha256"], "from": result["source"]["pb"],
        "input": "{} {} {}".format(io["input_name"], io["input_shape"], io["input_dtype"]),
        "outputs": ", ".join("{} {}".format(n, s) for n, s in zip(io["output_names"], io["output_shapes"])),
        "opset": result["model"]["opset"],
        "parity": "max |dlogit| {:.3g} <= {:.3g} over {} images, top-1 agreement {:.4f}".format(
            parity["max_abs_logit_diff"], parity["tolerance"], parity["images"], parity["top1_agreement"]),
        "next": ctx.next_after("export", "--model", result[export_format])})
    ctx.out.result(result)


# -- convert ----------------------------------------------------------------------------------------
@main.command()
@click.option("--soc", default=None, help="soc_version, e.g. Ascend910A [default: detected].")
@click.option("--atc", "atc_path", default=None, type=click.Path(dir_okay=False), help="Path of atc.")
@click.option("--model", default=None, type=click.Path(dir_okay=False),
              help="A .pb other than the frozen one, or an .onnx (atc --framework=5).")
@click.option("--output", default=None, help="Output path without .om [default: <project>/om/<pb name>].")
@click.option("--check-only", is_flag=True, help="Only pre-check the graph and print the atc command.")
@click.option("--precision-mode", default=None, help="atc --precision_mode.")
@click.option("--log-level", default=None, help="atc --log (debug, info, warning, error, null).")
@click.option("--out-nodes", default=None, help='atc --out_nodes, e.g. "probs:0".')
@click.option("--output-type", default=None, help="atc --output_type (FP32, FP16, UINT8, INT8).")
@click.option("--timeout", type=int, default=900, show_default=True, help="Seconds before atc is killed.")
@click.option("--force", is_flag=True, help=FORCE_HELP[:-1] + "; also re-runs atc when the .om is up to date.")
@click.option("--verify/--no-verify", default=None,
              help="Run the .om on the Ascend device against the .pb on the parity images [default: when CANN's "
                   "runtime and a device are here; device $ASCEND_DEVICE_ID, else 0].")
@click.option("--parity-images", type=int, default=1000, show_default=True,
              help="Test images the verification runs (0 = all).")
@click.option("--tolerance", type=float, default=None,
              help="Max |logit difference| of the .om [default: by precision mode: 1e-3 fp32, 0.1 fp16, 0.5 bf16].")
@command
def convert(ctx, soc, atc_path, model, output, check_only, precision_mode, log_level, out_nodes, output_type,
            timeout, force, verify, parity_images, tolerance):
    """Frozen .pb -> Ascend .om through Huawei's atc (soc_version detected when not given), then verified."""
    from mpltool.convert.stage import convert as convert_stage, verification_line

    result = convert_stage(ctx.project, soc=soc, atc=atc_path, model=model, output=output, check_only=check_only,
                           precision_mode=precision_mode, log_level=log_level, out_nodes=out_nodes,
                           output_type=output_type, timeout=timeout, force=force, verify=verify,
                           parity_images=parity_images, tolerance=tolerance, progress=ctx.out.info)
    fields = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    if result.get("verification"):
        fields["verification"] = verification_line(result["verification"])
    ctx.out.fields("convert", fields)
    ctx.out.result(result)


# -- predict ----------------------------------------------------------------------------------------
@main.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--model", default=None, help="ckpt (the best checkpoint train recorded for the target), latest, "
              "a checkpoint path, a frozen .pb or an .onnx [default: ckpt].")
@click.option("--target", default=None, help="Which network of a checkpoint [default: the algorithm's, ema].")
@click.option("--top-k", type=int, default=5, show_default=True, help="Classes shown per image.")
@command
def predict_command(ctx, images, model, target, top_k):
    """Top-k classes of PNG/JPEG files of any size, resized to the model's input as `data prepare` does."""
    from mpltool.predict import predict

    result = predict(ctx.project, images, model=model, target=target, top_k=top_k)
    for item in result["predictions"]:
        ctx.out.table("{} ({}x{})".format(item["image"], item["width"], item["height"]),
                      ["rank", "class", "probability"],
                      [[rank, top["name"], "{:.4f}".format(top["probability"])]
                       for rank, top in enumerate(item["top"], 1)])
    ctx.out.result(result)


def run():
    """The console script. After an interrupt, exit without running finalizers: TensorFlow objects that
    the interrupt cut off half-built would print "Exception ignored ... Traceback" lines at shutdown."""
    tuning.reexec_tuned(sys.argv[1:])  # `train` only: an allocator and thread settings (docs/performance.md)
    try:
        main(prog_name="mpltool")
    except SystemExit as exc:
        if exc.code == ExitCode.INTERRUPTED:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(ExitCode.INTERRUPTED)
        raise


if __name__ == "__main__":
    run()
