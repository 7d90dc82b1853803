// C interface of the Verilator harness of the systolic8 accelerator (sim/harness/harness.cpp).
//
// The shared library built by sim/verilator_backend.py exports exactly these functions; the Python side mirrors the
// two structs with ctypes, so any change here must bump S8_ABI_VERSION and the ctypes definitions together.
#ifndef SYSTOLIC8_HARNESS_H
#define SYSTOLIC8_HARNESS_H

#include <stdint.h>

#define S8_ABI_VERSION 2
#define S8_COUNTERS 6         // CYCLES, LOAD_BUSY, COMPUTE_BUSY, STORE_BUSY, VECTORS, INSTRUCTIONS
#define S8_MESSAGE_BYTES 512
#define S8_RW_READBACK 3      // IRQ_ENABLE, PROG_ADDR, PROG_LEN, read back after the counters

// Return codes of s8_run / s8_read_registers.
#define S8_OK 0
#define S8_WATCHDOG 1         // the accelerator did not raise irq within max_cycles
#define S8_CSR_FAILURE 2      // a register access timed out or answered an error
#define S8_BAD_ARGUMENT 3     // the message says which

#ifdef __cplusplus
extern "C" {
#endif

// The memory model's behaviour for one run.
typedef struct s8_bus_config {
    uint32_t read_latency;      // cycles from an AR handshake to the earliest first R beat (0: the next cycle)
    uint32_t write_latency;     // cycles from the last W beat to the earliest B response
    uint32_t max_outstanding;   // bursts queued per direction before ARREADY/AWREADY drop (>= 1)
    uint32_t stall_len;         // length of the back-pressure pattern (0: never stall)
    const uint8_t *stall;       // stall[i] != 0: the channels whose turn it is hold READY/VALID low that cycle
    uint32_t n_errors;          // error ranges
    const uint64_t *errors;     // n_errors triples: start, end (exclusive), response (2 SLVERR, 3 DECERR)
    // The register host (AXI4-Lite).
    uint32_t host_stall_len;    // length of its stall pattern (0: never stall)
    const uint8_t *host_stall;  // host_stall[i] != 0: the host holds BREADY/RREADY low, or waits to raise
                                // AWVALID/WVALID/ARVALID, on the cycles whose turn it is (each at its own phase)
    uint32_t n_csr_writes;      // 0: the host writes IRQ_ENABLE=1, PROG_ADDR and PROG_LEN; else these writes instead
    const uint32_t *csr_writes; // n_csr_writes triples: byte offset, value, WSTRB (4 bits); then CTRL=1
} s8_bus_config;

typedef struct s8_result {
    uint32_t status;              // STATUS register after irq
    uint32_t error_index;         // ERROR_INDEX register
    uint32_t counters[S8_COUNTERS];
    uint64_t cycles;              // clock cycles from the CTRL write's B handshake until irq was seen
    uint64_t total_cycles;        // every clock cycle of the run: reset and register accesses included
    uint64_t read_bursts, write_bursts, read_beats, write_beats;
    uint64_t protocol_errors;     // AXI rule violations the memory model saw (message holds the first)
    uint32_t registers[S8_RW_READBACK];  // IRQ_ENABLE, PROG_ADDR, PROG_LEN read after the counters
    char message[S8_MESSAGE_BYTES];
} s8_result;

int s8_abi_version(void);
uint32_t s8_bus_bytes(void);
void *s8_create(void);
void s8_destroy(void *handle);
// Reset the accelerator, start the program at prog_addr over the caller's DRAM image (read and written in place)
// and clock it until irq or max_cycles; fills *out (also on failure: message says what went wrong).
int s8_run(void *handle, uint8_t *dram, uint64_t dram_size, uint32_t prog_addr, uint32_t prog_len,
           uint64_t max_cycles, const s8_bus_config *bus, s8_result *out);
// Read n registers by byte offset over AXI4-Lite (no DRAM attached: bus accesses would answer DECERR).
int s8_read_registers(void *handle, const uint32_t *offsets, uint32_t n, uint32_t *values, char *message);

#ifdef __cplusplus
}
#endif

#endif
