"""cocotb module run by :mod:`sim.icarus_backend`: executes job files on the accelerator RTL.

JOB_FILE names an .npz (no pickle) holding ``dram`` (uint8), ``prog_addr``, ``prog_len`` and ``max_cycles``; the
final DRAM image, STATUS, ERROR_INDEX and the counters are written to RESULT_FILE.
"""

import json
import os

import cocotb
import numpy as np

from sim.cocotb_host import AcceleratorHost


@cocotb.test()
async def run_job(dut):
    with np.load(os.environ["JOB_FILE"], allow_pickle=False) as job:
        dram = job["dram"]
        prog_addr, prog_len, max_cycles = (int(job[k]) for k in ("prog_addr", "prog_len", "max_cycles"))
    # Round the memory up: a STORE's last covering bus word may extend past the image (its strobes are off there).
    host = AcceleratorHost(dut, mem_size=-(-len(dram) // 4096) * 4096, seed=0, latency=(0, 0), stall_prob=0.0)
    await host.reset()
    result = await host.run(dram.tobytes(), prog_addr=prog_addr, prog_len=prog_len, max_cycles=max_cycles)
    info = {"status": result.status, "error": result.error, "error_index": result.error_index,
            "counters": result.counters}
    np.savez(os.environ["RESULT_FILE"], dram=np.frombuffer(bytes(host.ram.mem[:len(dram)]), dtype=np.uint8),
             info=np.array(json.dumps(info)))
