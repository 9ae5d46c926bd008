"""The command line: each command parses options, calls one library function, renders its result.

Stage logic lives in the library (mpltool/<stage>/stage.py); nothing here does work a test could not
call directly.
"""

import functools
import sys
import traceback

import click

from mpltool import __version__
from mpltool.console import Output
from mpltool.errors import EXIT_CODE_MEANINGS, ExitCode, MpltoolError

EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join("  {:<4} {}".format(code, text) for code, text in EXIT_CODE_MEANINGS)


class Context:
    def __init__(self, project, json_mode, debug):
        self.project = project
        self.json_mode = json_mode
        self.debug = debug
        self.out = Output(json_mode=json_mode)


def command(func):
    """Run a command body with mpltool's error contract: one line and the documented exit code."""

    @functools.wraps(func)
    @click.pass_obj
    def wrapper(ctx, *args, **kwargs):
        try:
            return func(ctx, *args, **kwargs)
        except MpltoolError as exc:
            if ctx.debug:
                traceback.print_exc()
            ctx.out.error(str(exc))
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            ctx.out.error("interrupted")
            sys.exit(ExitCode.INTERRUPTED)
        except Exception as exc:  # the only path that may show a traceback, and only with --debug
            if ctx.debug:
                traceback.print_exc()
            ctx.out.error("internal error: {}: {} (run with --debug for the traceback)".format(
                type(exc).__name__, exc))
            sys.exit(ExitCode.INTERNAL)

    return wrapper


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--project", "project", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Project directory holding mpltool.yaml.")
@click.option("--json", "json_mode", is_flag=True, help="Print the result as one JSON object on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.version_option(__version__, prog_name="mpltool")
@click.pass_context
def main(click_ctx, project, json_mode, debug):
    """mpltool: Meta Pseudo Labels from CIFAR binaries to an Ascend .om, every step checked."""
    click_ctx.obj = Context(project, json_mode, debug)


# -- data -------------------------------------------------------------------------------------------
@main.group()
def data():
    """Import and validate CIFAR-format data; write the embedded demo data set."""


@data.command("prepare")
@click.option("--cifar", "source", required=True, type=click.Path(),
              help="Directory of CIFAR-10 binary files, or cifar-10-binary.tar.gz itself.")
@click.option("--recipe", default="mpl-wrn28-2", show_default=True, help="Recipe whose split settings are the defaults.")
@click.option("--labelled", "num_labelled", type=int, default=None, help="Labelled records [recipe: num_labelled].")
@click.option("--split", type=click.Choice(["first", "balanced"]), default=None,
              help="first N records (reference) or N/10 per class [recipe: split].")
@click.option("--seed", type=int, default=None, help="Seed of the balanced split [recipe: split_seed].")
@command
def data_prepare(ctx, source, recipe, num_labelled, split, seed):
    """Validate CIFAR files, copy them into the project, record hashes, counts and the labelled split."""
    from mpltool.data.stage import prepare
    from mpltool.recipes import load_recipe

    defaults = load_recipe(recipe)
    result = prepare(ctx.project, source,
                     num_labelled=defaults.num_labelled if num_labelled is None else num_labelled,
                     split=defaults.split if split is None else split,
                     seed=defaults.split_seed if seed is None else seed)
    ctx.out.table("CIFAR files", ["file", "records", "bytes", "sha256"],
                  [[f["name"], f["records"], f["size"], f["sha256"][:16]] for f in result["files"]])
    ctx.out.info("labelled: {} records ({} split, seed {}); unlabelled: {}; test: {}".format(
        result["labelled_records"], result["split"]["method"], result["split"]["seed"],
        result["unlabelled_records"], result["test_records"]))
    ctx.out.info("next: mpltool --project {} train --recipe {}".format(ctx.project, recipe))
    ctx.out.result(result)


@data.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the files [default: <project>/demo-cifar].")
@command
def data_demo(ctx, out_dir):
    """Write the embedded demo data set (CIFAR binary format, generated here, no download)."""
    from mpltool.data.stage import demo

    result = demo(out_dir, ctx.project)
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
                  [[s["stage"], s["status"], s["ended"], s["outputs_text"], s["metrics_text"]]
                   for s in result["stages"]])
    for line in result["notes"]:
        ctx.out.info(line)
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
@click.argument("name", default="mpl-wrn28-2")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key (repeatable).")
@command
def recipes_show(ctx, name, overrides):
    """Print a recipe resolved with its overrides (what `train` would use)."""
    from mpltool.recipes import FIELD_BY_NAME, load_recipe

    recipe = load_recipe(name, overrides)
    ctx.out.table("recipe {} ({})".format(recipe.recipe_name, recipe.recipe_path), ["key", "value", "meaning"],
                  [[k, v, FIELD_BY_NAME[k].doc + (" [--set]" if k in recipe.overrides else "")]
                   for k, v in recipe.values.items()])
    ctx.out.result({"name": recipe.recipe_name, "path": recipe.recipe_path, "values": recipe.values,
                    "overrides": recipe.overrides})


def run():
    main(prog_name="mpltool")


if __name__ == "__main__":
    run()
