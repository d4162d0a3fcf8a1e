"""One sim-tune memory experiment in a fresh process: python exp.py NAME SELECT STEPS [key=val ...]"""
import json, sys, time, resource, os, threading
sys.path.insert(0, "/work/main")
name, select, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
kv = dict(a.split("=", 1) for a in sys.argv[4:])
from agents import sim_tune
from agents.sim_tune import SimTuneConfig, train_simulator
from pathlib import Path
rows = [json.loads(l) for l in open("/root/.cache/zerosearch/sim-tune-2026-12-02/train.jsonl")]
L = json.load(open("/tmp/simtune_mem/lengths.json"))
order = sorted(range(len(rows)), key=lambda i: L[i])
if select == "short":
    idx = order[:4 * steps]
elif select == "long":
    idx = order[-4 * steps:]
elif select == "all":
    idx = list(range(len(rows)))
else:
    raise SystemExit(select)
ex = [rows[i] for i in idx]
attn = kv.pop("attn", None)
if attn:
    import transformers
    orig = transformers.AutoModelForCausalLM.from_pretrained
    def fp(*a, **k):
        k["attn_implementation"] = attn
        return orig(*a, **k)
    transformers.AutoModelForCausalLM.from_pretrained = fp
trim = kv.pop("trim", None)
cfg = dict(max_steps=steps, save_steps=10**6, logging_steps=1, epochs=1.0)
for k, v in kv.items():
    cfg[k] = json.loads(v)
config = SimTuneConfig(**cfg)
out = Path(f"/tmp/simtune_mem/{name}")
import shutil; shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
# sample RSS over time + per-step peak
import transformers
samples = []
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**30
stop = False
def sampler():
    t0 = time.time()
    while not stop:
        samples.append((round(time.time() - t0, 1), round(rss(), 3)))
        time.sleep(0.5)
th = threading.Thread(target=sampler, daemon=True); th.start()
if trim:
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    from transformers import TrainerCallback
    import trl
    orig_init = trl.SFTTrainer.__init__
    class Trim(TrainerCallback):
        def on_step_end(self, *a, **k):
            libc.malloc_trim(0)
    def init(self, *a, **k):
        k["callbacks"] = list(k.get("callbacks") or []) + [Trim()]
        orig_init(self, *a, **k)
    trl.SFTTrainer.__init__ = init
from transformers import TrainerCallback
import trl
orig_init2 = trl.SFTTrainer.__init__
step_peaks = []
class Peak(TrainerCallback):
    def on_step_end(self, args, state, control, **k):
        step_peaks.append((state.global_step, round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3), round(rss(), 3)))
def init2(self, *a, **k):
    k["callbacks"] = list(k.get("callbacks") or []) + [Peak()]
    orig_init2(self, *a, **k)
trl.SFTTrainer.__init__ = init2
t0 = time.time()
s = train_simulator(config, ex, out, progress=False)
stop = True
res = {"name": name, "select": select, "n": len(ex), "max_len": max(L[i] for i in idx), "min_len": min(L[i] for i in idx),
       "cfg": cfg, "attn": attn, "trim": trim, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX"),
       "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
       "train_seconds": round(s["train_seconds"], 1), "wall": round(time.time() - t0, 1), "step_peaks": step_peaks,
       "rss_max_sampled": max(v for _, v in samples)}
print(json.dumps(res))
with open("/tmp/simtune_mem/results.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
shutil.rmtree(out / "model", ignore_errors=True)
