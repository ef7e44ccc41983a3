"""scripts/stack-bound: the bound must not depend on the order calls are recorded or visited in.

Runs with the standard library only (python3 -m unittest discover -s tests/scripts), so
./scripts/test runs it without Zephyr or an Arm toolchain: the disassembly is synthetic.
"""
import importlib.machinery
import importlib.util
import itertools
import os
import random
import stat
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SCRIPT = os.path.join(ROOT, "scripts", "stack-bound")


def load():
    loader = importlib.machinery.SourceFileLoader("stack_bound", SCRIPT)
    spec = importlib.util.spec_from_loader("stack_bound", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


sb = load()


def graph(frames, edges, order):
    """funcs as parse() makes them, with the functions and each one's calls inserted in order
    (lists instead of sets, so the iteration order is the one given)."""
    names = sorted(frames)
    if order == "reversed":
        names.reverse()
    funcs = {}
    for name in names:
        calls = [c for a, c in edges if a == name]
        if order == "reversed":
            calls.reverse()
        funcs[name] = {"frame": frames[name], "calls": calls, "indirect": 0, "variable": False}
    return funcs


def brute_force(frames, edges, root):
    """Deepest chain from root holding each function at most once, by trying every path."""
    calls = {n: [c for a, c in edges if a == n] for n in frames}

    def deepest(fn, path):
        below = [deepest(c, path | {c}) for c in calls[fn] if c not in path]
        return frames[fn] + max(below, default=0)

    return deepest(root, {root})


# r calls a and c; a and b call each other; c calls b. The deepest chain holding each function
# once is r > c > b > a (111 B). The old memo kept b's value cut at a (10 B) when a was visited
# first and reused it from c, giving 110 B; visiting c first gave 111 B.
FRAMES = {"r": 0, "a": 100, "b": 10, "c": 1}
EDGES = [("r", "a"), ("r", "c"), ("a", "b"), ("b", "a"), ("c", "b")]


class OrderIndependence(unittest.TestCase):
    def test_cycle_reached_from_two_callers_in_either_order(self):
        results = [sb.bound(graph(FRAMES, EDGES, order), ["r"]) for order in ("sorted", "reversed")]
        for depth, chain, recursive, reach in results:
            self.assertEqual(depth, 111)
            self.assertEqual(chain, ("r 0", "c 1", "b 10", "a 100"))
            self.assertEqual(recursive, [["a", "b"]])
            self.assertEqual(reach, {"r", "a", "b", "c"})

    def test_every_visit_order_of_a_small_graph_gives_the_same_bound(self):
        for perm in itertools.permutations(EDGES):
            funcs = {n: {"frame": f, "calls": [c for a, c in perm if a == n], "indirect": 0,
                         "variable": False} for n, f in FRAMES.items()}
            self.assertEqual(sb.bound(funcs, ["r"])[:2], (111, ("r 0", "c 1", "b 10", "a 100")))

    def test_random_graphs_match_the_exhaustive_search_in_any_order(self):
        rng = random.Random(12)
        for _ in range(300):
            n = rng.randint(2, 8)
            names = [f"f{i}" for i in range(n)]
            frames = {name: rng.choice([0, 4, 8, 16, 24, 104]) for name in names}
            edges = [(a, b) for a in names for b in names if rng.random() < 0.3]
            expected = brute_force(frames, edges, "f0")
            for order in ("sorted", "reversed"):
                depth, chain, _, _ = sb.bound(graph(frames, edges, order), ["f0"])
                self.assertEqual(depth, expected, (frames, edges, order))
                # The chain printed is a real chain: it adds up and holds no function twice.
                self.assertEqual(sum(int(link.split()[1]) for link in chain), depth)
                self.assertEqual(len({link.split()[0] for link in chain}), len(chain))

    def test_several_roots_take_the_deepest(self):
        frames = {"w1": 8, "w2": 16, "x": 40, "y": 4}
        edges = [("w1", "x"), ("w2", "y")]
        for order in ("sorted", "reversed"):
            self.assertEqual(sb.bound(graph(frames, edges, order), ["w2", "w1"])[0], 48)

    def test_a_group_too_large_to_search_counts_every_frame_once(self):
        # A complete graph of 12 functions has far more simple paths than PATH_LIMIT.
        names = [f"g{i:02}" for i in range(12)]
        frames = {name: 8 for name in names}
        frames["leaf"] = 100
        edges = [(a, b) for a in names for b in names if a != b] + [("g05", "leaf")]
        for order in ("sorted", "reversed"):
            depth, chain, recursive, _ = sb.bound(graph(frames, edges, order), ["g00"])
            self.assertEqual(depth, 12 * 8 + 100)
            self.assertEqual(recursive, [names])


DISASSEMBLY = """
00001000 <r>:
    1000:	push	{r4, lr}
    1002:	sub	sp, #8
    1004:	bl	1100 <a>
    1008:	bl	1300 <c>
    100c:	blx	r3
    100e:	pop	{r4, pc}

00001100 <a>:
    1100:	stmdb	sp!, {r4, r5, r6, r7, r8, lr}
    1104:	vpush	{d8-d9}
    1108:	sub.w	sp, sp, #56
    110c:	blt.n	1110 <a+0x10>
    110e:	bl	1200 <b>
    1110:	ldmia.w	sp!, {r4, r5, r6, r7, r8, pc}

00001200 <b>:
    1200:	push	{r3, lr}
    1202:	ble.n	1206 <b+0x6>
    1204:	b.w	1100 <a>
    1206:	pop	{r3, pc}

00001300 <c>:
    1300:	push	{r7, lr}
    1302:	pop.w	{r7, lr}
    1306:	b.w	1200 <b>
"""

FAKE_OBJDUMP = """#!/bin/sh
cat "$STACK_BOUND_TEST_DISASSEMBLY"
"""


class Disassembly(unittest.TestCase):
    def test_frames_calls_and_tail_calls(self):
        funcs = sb.parse_disassembly(DISASSEMBLY)
        self.assertEqual(funcs["r"]["frame"], 8 + 8)
        self.assertEqual(funcs["a"]["frame"], 24 + 16 + 56)
        self.assertEqual(funcs["b"]["frame"], 8)
        self.assertEqual(funcs["c"]["frame"], 8)
        self.assertEqual(funcs["r"]["calls"], {"a", "c"})
        self.assertEqual(funcs["r"]["indirect"], 1)
        # blt.n/ble.n inside the function are branches, not calls of itself.
        self.assertEqual(funcs["a"]["calls"], {"b"})
        self.assertEqual(funcs["b"]["calls"], {"a"})
        self.assertEqual(funcs["c"]["calls"], {"b"})

    def run_script(self, args, hash_seed=None):
        """Runs scripts/stack-bound on DISASSEMBLY through the fake objdump."""
        with tempfile.TemporaryDirectory() as tmp:
            objdump = os.path.join(tmp, "arm-none-eabi-objdump")
            with open(objdump, "w") as f:
                f.write(FAKE_OBJDUMP)
            os.chmod(objdump, stat.S_IRWXU)
            dis = os.path.join(tmp, "dis.txt")
            with open(dis, "w") as f:
                f.write(DISASSEMBLY)
            env = dict(os.environ, PATH=tmp + os.pathsep + os.environ["PATH"],
                       STACK_BOUND_TEST_DISASSEMBLY=dis)
            if hash_seed is not None:
                env["PYTHONHASHSEED"] = str(hash_seed)
            return subprocess.run([sys.executable, SCRIPT, "image.elf", *args],
                                  capture_output=True, text=True, env=env)

    def test_command_line_gives_one_answer_for_every_hash_seed(self):
        # The old script iterated sets of names, whose order follows PYTHONHASHSEED.
        outputs = set()
        for seed in range(8):
            run = self.run_script(["t", "1000", "r"], hash_seed=seed)
            self.assertEqual(run.returncode, 0, run.stderr)
            outputs.add(run.stdout)
        self.assertEqual(len(outputs), 1, outputs)
        out = outputs.pop()
        # r 16 > c 8 > b 8 > a 96 = 128 B of calls, plus the 104 B exception frame.
        self.assertIn("stack t: 232 B of 1000 B (77 % headroom; 128 B of calls", out)
        self.assertIn("deepest: r 16 > c 8 > b 8 > a 96\n", out)
        self.assertIn("recursion (each function once per chain): a, b;", out)
        self.assertIn("1 indirect call sites not followed", out)

    def test_headroom_below_a_quarter_fails(self):
        run = self.run_script(["t", "256", "r"])
        self.assertEqual(run.returncode, 1, run.stdout)
        run = self.run_script(["t", "256", "nope"])
        self.assertEqual(run.returncode, 2)
        self.assertIn("nope: no such function", run.stderr)


if __name__ == "__main__":
    unittest.main()
