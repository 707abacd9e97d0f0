"""One progress bar per training run (tqdm): how far the run is, and the loss and tokens/s of its last step."""

from tqdm.auto import tqdm

# Redraw at most every half second: under a pipe or a log file each redraw is a line of its own.
MIN_INTERVAL_S = 0.5


def training_bar(desc: str, total: float, *, initial: float = 0, unit: str = "step", disable: bool = False) -> tqdm:
    """A bar over `total` units (optimizer steps, or FLOPs where a run stops at a FLOP budget).

    Args:
        desc (`str`): The run's name, shown before the bar.
        total (`float`): Units the run takes in all.
        initial (`float`, *optional*, defaults to 0): Units already done (a resumed run).
        unit (`str`, *optional*, defaults to `"step"`): What one unit is; anything but steps is shown
            scaled (`1.2G FLOP`).
        disable (`bool`, *optional*, defaults to `False`): No bar at all (e.g. on all but the main process).
            Without it, tqdm's own `TQDM_DISABLE=1` in the environment still turns the bar off (a `True` or
            `False` passed to tqdm would override it).
    """
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit if unit == "step" else f" {unit}",
        unit_scale=unit != "step",
        mininterval=MIN_INTERVAL_S,
        dynamic_ncols=True,
        **({"disable": True} if disable else {}),
    )


def show_step(bar: tqdm, loss: float, tokens_per_second: float, advance: float = 1, **extra: str) -> None:
    """Advance `bar` by one step's units and show that step's loss, tokens/s and any `extra` fields."""
    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_second:,.0f}", **extra, refresh=False)
    bar.update(advance)
