"""analyze's progress (issue 22 item 8): it only goes forward, and its ETA comes from rates.

A catch-up is replayed as the reporter would sample it: reading at a steady
rate, each read queueing its reconciles in bursts (one batch can queue
thousands of keys at once), and reconciling slowing down part-way (larger
objects later in the corpus). The truth is known, so the ETA can be checked.
"""

from __future__ import annotations

from controller.cli.progress import Progress, Sample, describe

BYTES = 20_000
READ_RATE = 2_000.0  # bytes/s
KEYS_PER_BYTE = 0.5
BURST_EVERY = 2.0  # seconds between the batches that queue keys
STEP = 0.25
SLOWDOWN = 6.0  # reconciling slows down here
WINDOW = 5.0  # Progress's default rate window


def reconcile_rate(t: float) -> float:
    return 2_000.0 if t < SLOWDOWN else 400.0


def catch_up() -> list[Sample]:
    """One sample every STEP seconds until the work is done."""
    samples, t, read, queued, reconciled, generated = [], 0.0, 0.0, 0.0, 0.0, 0.0
    while True:
        t += STEP
        read = min(BYTES, read + READ_RATE * STEP)
        if t % BURST_EVERY < STEP / 2 or read >= BYTES:
            new = read * KEYS_PER_BYTE - generated  # the keys of everything read so far
            queued, generated = queued + new, generated + new
        done_now = min(queued, reconcile_rate(t) * STEP)
        queued, reconciled = queued - done_now, reconciled + done_now
        samples.append(
            Sample(
                t,
                1,
                int(read >= BYTES),
                BYTES,
                int(read),
                int(read // 100),
                int(reconciled),
                int(queued),
            )
        )
        if read >= BYTES and queued == 0:
            return samples


def test_progress_only_goes_forward_and_ends_at_100_percent() -> None:
    progress = Progress()
    shown = [progress.update(s).done for s in catch_up()]
    assert all(b >= a for a, b in zip(shown, shown[1:], strict=False)), shown
    assert shown[0] >= 0.0 and shown[-1] == 1.0
    assert all(d < 1.0 for d in shown[:-1])


def test_the_eta_comes_from_the_measured_rates() -> None:
    samples = catch_up()
    finish = samples[-1].elapsed
    progress = Progress()
    misses = []
    for sample in samples:
        estimate = progress.update(sample)
        left = finish - sample.elapsed
        settled = sample.elapsed >= SLOWDOWN + WINDOW  # the slowdown, one rate window ago
        if settled and left >= 2.0:
            assert estimate.left is not None, sample
            if abs(estimate.left - left) > 0.25 * left:
                misses.append((sample.elapsed, round(estimate.left, 1), left))
    assert not misses, misses
    assert describe(estimate).endswith("ETA 0s")
