import threading
import time

from codecflow.stages.framing import frame_groups
from codecflow.stages.unit_queue import UnitQueue


def test_gop_framing_last_gop_shorter():
    groups = list(frame_groups(([i] for i in range(10)), "gop", 4))
    assert [(len(g), first, idx) for g, first, idx in groups] == [(4, 0, 0), (4, 4, 1), (2, 8, 2)]
    assert groups[1][0] == [4, 5, 6, 7]


def test_pair_and_frame_framing():
    pairs = list(frame_groups(([i, -i] for i in range(3)), "pair", 1))
    assert pairs[2] == ([2, -2], 2, 2)
    frames = list(frame_groups(([i] for i in range(3)), "frame", 1))
    assert frames[1] == ([1], 1, 1)


def unit(i):
    return ("unit", "s", [i], None, i, i, 0.0, {})


def test_live_queue_drops_oldest_unit_never_markers():
    q = UnitQueue(2, live=True)
    q.put(("start", "s"))
    for i in range(5):
        assert q.put(unit(i))
    q.put(("eos", "s", 5))
    items = [q.get_nowait() for _ in range(4)]
    assert items[0][0] == "start" and items[-1][0] == "eos"
    assert [it[4] for it in items[1:3]] == [3, 4]  # the newest two survive
    assert q.dropped_units == 3 and q.dropped_frames == 3


def test_offline_queue_blocks_until_space():
    q = UnitQueue(1, live=False)
    q.put(unit(0))
    done = threading.Event()

    def producer():
        q.put(unit(1))
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.3)
    assert not done.is_set()  # backpressure: the reader waits
    q.get_nowait()
    t.join(2)
    assert done.is_set() and q.dropped_units == 0


def test_offline_queue_close_releases_waiter():
    q = UnitQueue(1, live=False)
    q.put(unit(0))
    res = []
    t = threading.Thread(target=lambda: res.append(q.put(unit(1))))
    t.start()
    q.close()
    t.join(2)
    assert res == [False]


def test_closed_queue_refuses_units_but_passes_markers():
    q = UnitQueue(2, live=False)
    q.close()
    assert q.put(unit(0)) is False
    assert q.put(("eos", "s", 0)) is True and q.put(("done",)) is True
    assert [q.get_nowait()[0] for _ in range(2)] == ["eos", "done"]
