"""cocotb module run by :mod:`sim.icarus_backend` and ``make bench``: executes job files on the accelerator RTL.

JOB_FILE names an .npz (no pickle) holding ``dram`` (uint8), ``prog_addr``, ``prog_len`` and ``max_cycles``; the
final DRAM image, STATUS, ERROR_INDEX, the counters and the run's measurements (``total_cycles`` simulated from
reset to the end, ``wall_s`` and ``cpu_s`` spent simulating them) are written to RESULT_FILE.
"""

import json
import os
import time

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time

from sim.cocotb_host import CLOCK_NS, AcceleratorHost


@cocotb.test()
async def run_job(dut):
    with np.load(os.environ["JOB_FILE"], allow_pickle=False) as job:
        dram = job["dram"]
        prog_addr, prog_len, max_cycles = (int(job[k]) for k in ("prog_addr", "prog_len", "max_cycles"))
    # Round the memory up: a STORE's last covering bus word may extend past the image (its strobes are off there).
    host = AcceleratorHost(dut, mem_size=-(-len(dram) // 4096) * 4096, seed=0, latency=(0, 0), stall_prob=0.0)
    start_ns, start_wall, start_cpu = get_sim_time("ns"), time.perf_counter(), time.process_time()
    await host.reset()
    result = await host.run(dram.tobytes(), prog_addr=prog_addr, prog_len=prog_len, max_cycles=max_cycles)
    info = {"status": result.status, "error": result.error, "error_index": result.error_index,
            "counters": result.counters, "total_cycles": round((get_sim_time("ns") - start_ns) / CLOCK_NS),
            "wall_s": time.perf_counter() - start_wall, "cpu_s": time.process_time() - start_cpu}
    np.savez(os.environ["RESULT_FILE"], dram=np.frombuffer(bytes(host.ram.mem[:len(dram)]), dtype=np.uint8),
             info=np.array(json.dumps(info)))
