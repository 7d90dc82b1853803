// Native harness of the systolic8 accelerator: the Verilated RTL top, an AXI4 memory model on its `bus` master
// port and an AXI4-Lite host on its `csr` port, behind the C interface of harness.h (loaded with ctypes by
// sim/verilator_backend.py, which passes the register offsets and the bus width as -D definitions).
//
// Clocking: the Verilated top is a generated wrapper (sim/verilator_backend.py) that registers every input of the
// accelerator on the rising edge, so no input reaches the design's logic combinationally and all of it is
// evaluated once per cycle, in the rising-edge eval (without the wrapper Verilator re-evaluates the large
// input-dependent logic in every eval call, which made the loop 2.3x slower). The harness keeps the same
// cycle-accurate AXI behaviour as a model that drives the ports directly: in each cycle it computes the
// handshakes from the DUT's settled outputs and the input values the DUT sees (`cur_`), updates the memory model
// and the register host, writes the inputs of the next cycle, and then clocks one rising and one falling edge.
// No tracing, no per-cycle allocation: the DUT's eval dominates. After the first eval() (initial blocks and
// settling), every edge calls the model's root evaluation function directly: eval() would add, per call, the
// deletion of dynamic objects and the flush of the cross-thread message queue, which this design never uses (no
// classes, no $display, one thread per model); 2-4% faster on the 8x8 array.
//
// Memory model: INCR bursts (FIXED/WRAP and 4 KiB crossings count as protocol errors), any beat size up to the bus
// width, WSTRB, up to `max_outstanding` queued bursts per direction, W beats accepted before their AW, read data
// and write responses in order after a fixed latency, and an optional back-pressure pattern. Error responses:
// a read beat answers SLVERR/DECERR when its bus word overlaps an error range and DECERR when the word starts past
// the end of the image (the tail word of an image whose size is not a multiple of the bus width reads as
// zero-padded); a write beat answers the error when one of its *strobed* bytes lies in a range or past the end,
// and then writes nothing. Failing reads return zero data. This is the byte-granular rule of sim/isa_sim.py as far
// as an AXI slave can see it.
//
// Register host: AXI4-Lite writes (any WSTRB) and reads, one at a time, with an optional stall pattern of its own
// (BREADY/RREADY held low, AWVALID/WVALID/ARVALID raised late). A run writes IRQ_ENABLE, PROG_ADDR and PROG_LEN
// (or the caller's list of strobed writes instead), then CTRL; after irq it reads STATUS, ERROR_INDEX, the counters
// and IRQ_ENABLE, PROG_ADDR and PROG_LEN back.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "Vaccelerator.h"
#include "verilated.h"

#include "harness.h"

#define S8_EXPORT extern "C" __attribute__((visibility("default")))

// The root evaluation function Verilator generates for the model (what Vaccelerator::eval_step() calls between its
// bookkeeping): one delta-cycle loop over the triggered logic.
void Vaccelerator___024root___eval(Vaccelerator___024root *vlSelf);

#ifndef S8_BUS_BYTES
#error "S8_BUS_BYTES (the AXI4 data width in bytes) must be defined by the build"
#endif
#if !defined(S8_REG_CTRL) || !defined(S8_REG_STATUS) || !defined(S8_REG_ERROR_INDEX) || \
    !defined(S8_REG_IRQ_ENABLE) || !defined(S8_REG_PROG_ADDR) || !defined(S8_REG_PROG_LEN) || \
    !defined(S8_REG_COUNTERS)
#error "the register offsets (S8_REG_*, from hw/regmap.py) must be defined by the build"
#endif

// Verilator escapes "__" in identifiers as "___05F": Amaranth's `bus__ar__valid` is `bus___05Far___05Fvalid`.
#define BUS(ch, field) bus___05F##ch##___05F##field
#define CSR(ch, field) csr___05F##ch##___05F##field

namespace {

constexpr uint64_t kBusBytes = S8_BUS_BYTES;
constexpr uint32_t kCounterOffsets[S8_COUNTERS] = {S8_REG_COUNTERS};
constexpr int kCsrTimeout = 1000;     // cycles one register access may take
constexpr int kResetCycles = 4;
constexpr uint8_t kOkay = 0, kDecerr = 3;   // SLVERR (2) only comes from the error ranges
enum Channel { kAR, kAW, kW, kR, kB, kChannels };

// Data ports are IData (32-bit bus), QData (64-bit) or VlWide<N> (wider): overloads pick the right copy.
inline void put_word(uint32_t &port, const uint8_t *src) { std::memcpy(&port, src, 4); }
inline void put_word(uint64_t &port, const uint8_t *src) { std::memcpy(&port, src, 8); }
template <std::size_t N> inline void put_word(VlWide<N> &port, const uint8_t *src) {
    std::memcpy(port.data(), src, 4 * N);
}
inline void get_word(const uint32_t &port, uint8_t *dst) { std::memcpy(dst, &port, 4); }
inline void get_word(const uint64_t &port, uint8_t *dst) { std::memcpy(dst, &port, 8); }
template <std::size_t N> inline void get_word(const VlWide<N> &port, uint8_t *dst) {
    std::memcpy(dst, port.data(), 4 * N);
}

struct Burst {
    uint64_t addr;       // address of the first beat
    uint64_t ready_at;   // reads: first cycle the first beat may be presented
    uint32_t beats;
    uint32_t beat;       // beats done
    uint8_t size;        // log2 bytes per beat
    uint8_t id;
    uint8_t resp;        // writes: worst response so far
};

struct WBeat {
    uint8_t data[kBusBytes];
    uint64_t strb;
    bool last;
};

struct BResp {
    uint64_t ready_at;
    uint8_t resp, id;
};

class Harness {
  public:
    Harness() : ctx_(new VerilatedContext), top_(new Vaccelerator(ctx_.get(), "accelerator")) {
        static_assert(sizeof(top_->BUS(w, data)) == kBusBytes, "S8_BUS_BYTES disagrees with the Verilog bus width");
        top_->eval();   // runs the initial blocks and settles the model; later edges use eval_edge()
        reset();
    }
    ~Harness() { top_->final(); }

    int run(uint8_t *dram, uint64_t size, uint32_t prog_addr, uint32_t prog_len, uint64_t max_cycles,
            const s8_bus_config &bus, s8_result &out);
    int read_registers(const uint32_t *offsets, uint32_t n, uint32_t *values, std::string &message);

  private:
    // ---- clocking
    template <bool kCsr> void step();
    void eval_edge() { Vaccelerator___024root___eval(top_->rootp); }
    void latch_inputs();
    void reset();
    void clear_memory_model();
    bool stall(Channel ch) const {
        return stall_len_ && stall_[(cycle_ + phase_[ch]) % stall_len_];
    }

    // ---- memory model
    void accept_address(Burst &b, bool read);
    void write_beat(const WBeat &w);
    void present_read_beat();
    uint64_t beat_addr(const Burst &b) const {
        const uint64_t bytes = uint64_t(1) << b.size;
        return b.beat == 0 ? b.addr : (b.addr & ~(bytes - 1)) + uint64_t(b.beat) * bytes;
    }
    uint8_t read_resp(uint64_t word) const;
    uint8_t write_resp(uint64_t word, uint64_t strb) const;
    void protocol_error(const std::string &what);

    // ---- register host
    bool host_stall(int k) const {
        return host_stall_len_ && host_stall_[(cycle_ + 7919u * uint64_t(k)) % host_stall_len_];
    }
    int csr_write(uint32_t offset, uint32_t value, std::string &message, uint32_t strb = 0xF);
    int csr_read(uint32_t offset, uint32_t &value, std::string &message);

    std::unique_ptr<VerilatedContext> ctx_;
    std::unique_ptr<Vaccelerator> top_;
    uint64_t cycle_ = 0;

    uint8_t *dram_ = nullptr;
    uint64_t size_ = 0;
    uint32_t read_latency_ = 0, write_latency_ = 0, max_outstanding_ = 8;
    const uint8_t *stall_ = nullptr;
    uint32_t stall_len_ = 0;
    const uint8_t *host_stall_ = nullptr;
    uint32_t host_stall_len_ = 0;
    uint64_t phase_[kChannels] = {};
    std::vector<uint64_t> errors_;   // start, end, resp triples
    std::deque<Burst> reads_, writes_;
    std::deque<WBeat> wbeats_;
    std::deque<BResp> bresps_;
    uint64_t last_b_at_ = 0;
    uint64_t read_bursts_ = 0, write_bursts_ = 0, read_beats_ = 0, write_beats_ = 0, protocol_errors_ = 0;
    std::string first_protocol_error_;

    // The input values the DUT sees in the current cycle (its wrapper's registers).
    struct {
        bool ar_ready, aw_ready, w_ready, r_valid, b_valid;
        bool csr_aw_valid, csr_w_valid, csr_b_ready, csr_ar_valid, csr_r_ready;
    } cur_ = {};

    // Address and data requests the DUT raised without a handshake in the previous cycle, for the stability check.
    struct {
        bool ar, aw, w;
        uint64_t ar_addr, aw_addr;
        uint32_t ar_len, aw_len;
    } waiting_ = {};

    // What the register host saw in the last step<true>().
    bool csr_aw_fired_ = false, csr_w_fired_ = false, csr_b_fired_ = false, csr_ar_fired_ = false,
         csr_r_fired_ = false;
    uint32_t csr_resp_ = 0, csr_rdata_ = 0;
};

template <bool kCsr> void Harness::step() {
    Vaccelerator &t = *top_;
    // The DUT's outputs show the current cycle and `cur_` what it sees on its inputs: this cycle's handshakes.
    const bool ar_fire = t.BUS(ar, valid) && cur_.ar_ready;
    const bool aw_fire = t.BUS(aw, valid) && cur_.aw_ready;
    const bool w_fire = t.BUS(w, valid) && cur_.w_ready;
    const bool r_fire = cur_.r_valid && t.BUS(r, ready);
    const bool b_fire = cur_.b_valid && t.BUS(b, ready);
    // AXI: a VALID, once raised, stays high with a stable payload until its handshake.
    if (VL_UNLIKELY(waiting_.ar) && (!t.BUS(ar, valid) || t.BUS(ar, addr) != waiting_.ar_addr ||
                                     t.BUS(ar, len) != waiting_.ar_len))
        protocol_error("ARVALID dropped or AR payload changed before ARREADY");
    if (VL_UNLIKELY(waiting_.aw) && (!t.BUS(aw, valid) || t.BUS(aw, addr) != waiting_.aw_addr ||
                                     t.BUS(aw, len) != waiting_.aw_len))
        protocol_error("AWVALID dropped or AW payload changed before AWREADY");
    if (VL_UNLIKELY(waiting_.w) && !t.BUS(w, valid)) protocol_error("WVALID dropped before WREADY");
    waiting_.ar = t.BUS(ar, valid) && !cur_.ar_ready;
    waiting_.aw = t.BUS(aw, valid) && !cur_.aw_ready;
    waiting_.w = t.BUS(w, valid) && !cur_.w_ready;
    waiting_.ar_addr = t.BUS(ar, addr);
    waiting_.aw_addr = t.BUS(aw, addr);
    waiting_.ar_len = t.BUS(ar, len);
    waiting_.aw_len = t.BUS(aw, len);
    if (kCsr) {
        csr_aw_fired_ = cur_.csr_aw_valid && t.CSR(aw, ready);
        csr_w_fired_ = cur_.csr_w_valid && t.CSR(w, ready);
        csr_b_fired_ = t.CSR(b, valid) && cur_.csr_b_ready;
        csr_ar_fired_ = cur_.csr_ar_valid && t.CSR(ar, ready);
        csr_r_fired_ = t.CSR(r, valid) && cur_.csr_r_ready;
        if (csr_b_fired_) csr_resp_ = t.CSR(b, resp);
        if (csr_r_fired_) {
            csr_resp_ = t.CSR(r, resp);
            csr_rdata_ = t.CSR(r, data);
        }
        // A request is withdrawn and a response no longer accepted from the next cycle on.
        if (csr_aw_fired_) t.CSR(aw, valid) = 0;
        if (csr_w_fired_) t.CSR(w, valid) = 0;
        if (csr_b_fired_) t.CSR(b, ready) = 0;
        if (csr_ar_fired_) t.CSR(ar, valid) = 0;
        if (csr_r_fired_) t.CSR(r, ready) = 0;
    }
    ++cycle_;

    // The memory model's state after this cycle's edge and its outputs for the next cycle (the input ports hold
    // the current values until they are overwritten here).
    if (ar_fire) {
        Burst b{t.BUS(ar, addr), 0, uint32_t(t.BUS(ar, len)) + 1, 0, uint8_t(t.BUS(ar, size)),
                uint8_t(t.BUS(ar, id)), kOkay};
        if (t.BUS(ar, burst) != 1) protocol_error("AR burst type " + std::to_string(t.BUS(ar, burst)) + " is not INCR");
        accept_address(b, true);
    }
    if (aw_fire) {
        Burst b{t.BUS(aw, addr), 0, uint32_t(t.BUS(aw, len)) + 1, 0, uint8_t(t.BUS(aw, size)),
                uint8_t(t.BUS(aw, id)), kOkay};
        if (t.BUS(aw, burst) != 1) protocol_error("AW burst type " + std::to_string(t.BUS(aw, burst)) + " is not INCR");
        accept_address(b, false);
    }
    if (w_fire) {
        wbeats_.emplace_back();
        WBeat &w = wbeats_.back();
        get_word(t.BUS(w, data), w.data);
        w.strb = t.BUS(w, strb);
        w.last = t.BUS(w, last);
    }
    while (!writes_.empty() && !wbeats_.empty()) {
        write_beat(wbeats_.front());
        wbeats_.pop_front();
    }
    if (r_fire) {
        ++read_beats_;
        Burst &b = reads_.front();
        if (++b.beat == b.beats) reads_.pop_front();
        t.BUS(r, valid) = 0;
    }
    if (b_fire) {
        bresps_.pop_front();
        t.BUS(b, valid) = 0;
    }
    if (!t.BUS(r, valid) && !reads_.empty() && reads_.front().ready_at <= cycle_ && !stall(kR)) present_read_beat();
    if (!t.BUS(b, valid) && !bresps_.empty() && bresps_.front().ready_at <= cycle_ && !stall(kB)) {
        t.BUS(b, resp) = bresps_.front().resp;
        t.BUS(b, id) = bresps_.front().id;
        t.BUS(b, valid) = 1;
    }
    t.BUS(ar, ready) = reads_.size() < max_outstanding_ && !stall(kAR);
    t.BUS(aw, ready) = writes_.size() < max_outstanding_ && !stall(kAW);
    t.BUS(w, ready) = wbeats_.size() < 256 && !stall(kW);

    // The edge: the wrapper's input registers take the values just set and the design advances; its outputs
    // settle for the next cycle. The falling-edge eval only lets Verilator see the next rising edge (nothing in
    // the design is sensitive to it and no input reaches logic combinationally, so it costs next to nothing).
    t.clk = 1;
    eval_edge();
    t.clk = 0;
    eval_edge();
    latch_inputs();
}

void Harness::latch_inputs() {
    const Vaccelerator &t = *top_;
    cur_.ar_ready = t.BUS(ar, ready);
    cur_.aw_ready = t.BUS(aw, ready);
    cur_.w_ready = t.BUS(w, ready);
    cur_.r_valid = t.BUS(r, valid);
    cur_.b_valid = t.BUS(b, valid);
    cur_.csr_aw_valid = t.CSR(aw, valid);
    cur_.csr_w_valid = t.CSR(w, valid);
    cur_.csr_b_ready = t.CSR(b, ready);
    cur_.csr_ar_valid = t.CSR(ar, valid);
    cur_.csr_r_ready = t.CSR(r, ready);
}

void Harness::protocol_error(const std::string &what) {
    if (protocol_errors_++ == 0) first_protocol_error_ = "cycle " + std::to_string(cycle_) + ": " + what;
}

void Harness::accept_address(Burst &b, bool read) {
    const char *kind = read ? "AR" : "AW";
    if ((uint64_t(1) << b.size) > kBusBytes) {
        protocol_error(std::string(kind) + " size " + std::to_string(b.size) + " exceeds the bus width");
        b.size = __builtin_ctzll(kBusBytes);
    }
    const uint64_t bytes = uint64_t(1) << b.size;
    const uint64_t last = (b.addr & ~(bytes - 1)) + uint64_t(b.beats) * bytes - 1;
    if ((b.addr >> 12) != (last >> 12)) {
        char text[160];
        std::snprintf(text, sizeof text, "%s burst at 0x%llx of %u beats crosses a 4 KiB boundary", kind,
                      (unsigned long long)b.addr, b.beats);
        protocol_error(text);
    }
    if (read) {
        b.ready_at = cycle_ + read_latency_;
        reads_.push_back(b);
        ++read_bursts_;
    } else {
        writes_.push_back(b);
        ++write_bursts_;
    }
}

uint8_t Harness::read_resp(uint64_t word) const {
    for (std::size_t i = 0; i < errors_.size(); i += 3)
        if (errors_[i] < word + kBusBytes && word < errors_[i + 1]) return uint8_t(errors_[i + 2]);
    return word < size_ ? kOkay : kDecerr;
}

uint8_t Harness::write_resp(uint64_t word, uint64_t strb) const {
    for (uint64_t lane = 0; lane < kBusBytes; ++lane) {
        if (!(strb >> lane & 1)) continue;
        const uint64_t addr = word + lane;
        for (std::size_t i = 0; i < errors_.size(); i += 3)
            if (errors_[i] <= addr && addr < errors_[i + 1]) return uint8_t(errors_[i + 2]);
        if (addr >= size_) return kDecerr;
    }
    return kOkay;
}

void Harness::present_read_beat() {
    Vaccelerator &t = *top_;
    const Burst &b = reads_.front();
    const uint64_t word = beat_addr(b) & ~(kBusBytes - 1);
    const uint8_t resp = read_resp(word);
    uint8_t data[kBusBytes] = {};
    if (resp == kOkay) std::memcpy(data, dram_ + word, std::min<uint64_t>(kBusBytes, size_ - word));
    put_word(t.BUS(r, data), data);
    t.BUS(r, resp) = resp;
    t.BUS(r, id) = b.id;
    t.BUS(r, last) = b.beat + 1 == b.beats;
    t.BUS(r, valid) = 1;
}

void Harness::write_beat(const WBeat &w) {
    Burst &b = writes_.front();
    const uint64_t word = beat_addr(b) & ~(kBusBytes - 1);
    const uint8_t resp = write_resp(word, w.strb);
    if (resp == kOkay) {
        for (uint64_t lane = 0; lane < kBusBytes; ++lane)
            if (w.strb >> lane & 1) dram_[word + lane] = w.data[lane];
    }
    if (resp > b.resp) b.resp = resp;
    ++write_beats_;
    const bool final = b.beat + 1 == b.beats;
    if (w.last != final) {
        char text[160];
        std::snprintf(text, sizeof text, "WLAST=%d on beat %u of the %u-beat burst at 0x%llx", int(w.last), b.beat,
                      b.beats, (unsigned long long)b.addr);
        protocol_error(text);
    }
    ++b.beat;
    if (final || w.last) {   // an early WLAST ends the burst too, so the model never hangs on it
        last_b_at_ = std::max(last_b_at_, cycle_ + write_latency_);
        bresps_.push_back(BResp{last_b_at_, b.resp, b.id});
        writes_.pop_front();
    }
}

void Harness::clear_memory_model() {
    reads_.clear();
    writes_.clear();
    wbeats_.clear();
    bresps_.clear();
    last_b_at_ = 0;
    Vaccelerator &t = *top_;
    t.BUS(ar, ready) = 0;
    t.BUS(aw, ready) = 0;
    t.BUS(w, ready) = 0;
    t.BUS(r, valid) = 0;
    t.BUS(b, valid) = 0;
    t.CSR(aw, valid) = 0;
    t.CSR(w, valid) = 0;
    t.CSR(b, ready) = 0;
    t.CSR(ar, valid) = 0;
    t.CSR(r, ready) = 0;
    cur_ = {};   // the DUT may still see the old values for a cycle; it is in reset or idle then
    waiting_ = {};
}

void Harness::reset() {
    clear_memory_model();
    top_->rst = 1;
    for (int i = 0; i < kResetCycles; ++i) step<false>();
    top_->rst = 0;
    step<false>();   // the design sees rst low from the next cycle on
    clear_memory_model();
}

// The host raises AWVALID and WVALID (each once, on a cycle its stall pattern allows; they stay up until their
// handshake) and holds BREADY high on the cycles the pattern allows until the B handshake. Without a pattern all
// three are high from the first cycle.
int Harness::csr_write(uint32_t offset, uint32_t value, std::string &message, uint32_t strb) {
    Vaccelerator &t = *top_;
    t.CSR(aw, addr) = offset;
    t.CSR(aw, prot) = 0;
    t.CSR(w, data) = value;
    t.CSR(w, strb) = strb & 0xF;
    bool aw_raised = false, w_raised = false, aw_done = false, w_done = false;
    for (int i = 0; i < kCsrTimeout; ++i) {
        if (!aw_raised && !host_stall(0)) t.CSR(aw, valid) = aw_raised = true;
        if (!w_raised && !host_stall(1)) t.CSR(w, valid) = w_raised = true;
        t.CSR(b, ready) = !host_stall(2);
        step<true>();
        aw_done |= csr_aw_fired_;
        w_done |= csr_w_fired_;
        if (csr_b_fired_ && !(aw_done && w_done)) {
            message = "register write to offset " + std::to_string(offset) + ": B response before both AW and W";
            t.CSR(aw, valid) = t.CSR(w, valid) = t.CSR(b, ready) = 0;
            return S8_CSR_FAILURE;
        }
        if (csr_b_fired_) {
            t.CSR(b, ready) = 0;
            if (csr_resp_ == kOkay) return S8_OK;
            char text[128];
            std::snprintf(text, sizeof text, "register write of 0x%x to offset 0x%x answered response %u", value,
                          offset, csr_resp_);
            message = text;
            return S8_CSR_FAILURE;
        }
    }
    t.CSR(aw, valid) = t.CSR(w, valid) = t.CSR(b, ready) = 0;
    message = "register write to offset " + std::to_string(offset) + " got no response in " +
              std::to_string(kCsrTimeout) + " cycles";
    return S8_CSR_FAILURE;
}

int Harness::csr_read(uint32_t offset, uint32_t &value, std::string &message) {
    Vaccelerator &t = *top_;
    t.CSR(ar, addr) = offset;
    t.CSR(ar, prot) = 0;
    bool ar_raised = false;
    for (int i = 0; i < kCsrTimeout; ++i) {
        if (!ar_raised && !host_stall(3)) t.CSR(ar, valid) = ar_raised = true;
        t.CSR(r, ready) = !host_stall(4);
        step<true>();
        if (csr_r_fired_) {
            t.CSR(r, ready) = 0;
            value = csr_rdata_;
            if (csr_resp_ == kOkay) return S8_OK;
            char text[128];
            std::snprintf(text, sizeof text, "register read of offset 0x%x answered response %u", offset, csr_resp_);
            message = text;
            return S8_CSR_FAILURE;
        }
    }
    t.CSR(ar, valid) = t.CSR(r, ready) = 0;
    message = "register read of offset " + std::to_string(offset) + " got no response in " +
              std::to_string(kCsrTimeout) + " cycles";
    return S8_CSR_FAILURE;
}

int Harness::read_registers(const uint32_t *offsets, uint32_t n, uint32_t *values, std::string &message) {
    dram_ = nullptr;
    size_ = 0;
    errors_.clear();
    stall_len_ = 0;
    host_stall_len_ = 0;
    for (uint32_t i = 0; i < n; ++i) {
        const int rc = csr_read(offsets[i], values[i], message);
        if (rc != S8_OK) return rc;
    }
    return S8_OK;
}

int Harness::run(uint8_t *dram, uint64_t size, uint32_t prog_addr, uint32_t prog_len, uint64_t max_cycles,
                 const s8_bus_config &bus, s8_result &out) {
    std::memset(&out, 0, sizeof out);
    std::string message;
    if (bus.max_outstanding == 0) message = "max_outstanding must be at least 1";
    if (bus.stall_len && !bus.stall) message = "stall pattern pointer is null";
    if (bus.n_errors && !bus.errors) message = "error range pointer is null";
    if (bus.host_stall_len && !bus.host_stall) message = "host stall pattern pointer is null";
    if (bus.n_csr_writes && !bus.csr_writes) message = "register write list pointer is null";
    if (size && !dram) message = "DRAM pointer is null";
    if (!message.empty()) {
        std::snprintf(out.message, sizeof out.message, "%s", message.c_str());
        return S8_BAD_ARGUMENT;
    }
    dram_ = dram;
    size_ = size;
    read_latency_ = bus.read_latency;
    write_latency_ = bus.write_latency;
    max_outstanding_ = bus.max_outstanding;
    stall_ = bus.stall;
    stall_len_ = bus.stall_len;
    for (int ch = 0; ch < kChannels; ++ch) phase_[ch] = stall_len_ ? (uint64_t(ch) * 7919u) % stall_len_ : 0;
    errors_.assign(bus.errors, bus.errors + 3 * uint64_t(bus.n_errors));
    host_stall_ = bus.host_stall;
    host_stall_len_ = bus.host_stall_len;

    const uint64_t first_cycle = cycle_;
    reset();
    // Count from here: whatever a previous run left in flight was cut off by the reset.
    read_bursts_ = write_bursts_ = read_beats_ = write_beats_ = protocol_errors_ = 0;
    first_protocol_error_.clear();
    int rc = S8_OK;
    if (bus.n_csr_writes == 0) {
        rc = csr_write(S8_REG_IRQ_ENABLE, 1, message);
        if (rc == S8_OK) rc = csr_write(S8_REG_PROG_ADDR, prog_addr, message);
        if (rc == S8_OK) rc = csr_write(S8_REG_PROG_LEN, prog_len, message);
    }
    for (uint32_t i = 0; i < bus.n_csr_writes && rc == S8_OK; ++i)
        rc = csr_write(bus.csr_writes[3 * i], bus.csr_writes[3 * i + 1], message, bus.csr_writes[3 * i + 2]);
    if (rc == S8_OK) rc = csr_write(S8_REG_CTRL, 1, message);
    const uint64_t started = cycle_;
    if (rc == S8_OK) {
        Vaccelerator &t = *top_;
        const uint64_t deadline = started + max_cycles;
        while (!t.irq && cycle_ < deadline) step<false>();
        out.cycles = cycle_ - started;
        if (!t.irq) rc = S8_WATCHDOG;
    }
    if (rc == S8_OK || rc == S8_WATCHDOG) {
        std::string read_message;
        int rrc = csr_read(S8_REG_STATUS, out.status, read_message);
        if (rrc == S8_OK) rrc = csr_read(S8_REG_ERROR_INDEX, out.error_index, read_message);
        for (int i = 0; i < S8_COUNTERS && rrc == S8_OK; ++i)
            rrc = csr_read(kCounterOffsets[i], out.counters[i], read_message);
        const uint32_t readback[S8_RW_READBACK] = {S8_REG_IRQ_ENABLE, S8_REG_PROG_ADDR, S8_REG_PROG_LEN};
        for (int i = 0; i < S8_RW_READBACK && rrc == S8_OK; ++i)
            rrc = csr_read(readback[i], out.registers[i], read_message);
        if (rrc != S8_OK) {
            rc = rrc;
            message = read_message;
        } else if (rc == S8_WATCHDOG) {
            char text[200];
            std::snprintf(text, sizeof text, "no irq after %llu cycles (STATUS=0x%x, %llu read and %llu write "
                          "bursts so far)", (unsigned long long)out.cycles, out.status,
                          (unsigned long long)read_bursts_, (unsigned long long)write_bursts_);
            message = text;
        }
    }
    out.total_cycles = cycle_ - first_cycle;
    out.read_bursts = read_bursts_;
    out.write_bursts = write_bursts_;
    out.read_beats = read_beats_;
    out.write_beats = write_beats_;
    out.protocol_errors = protocol_errors_;
    if (message.empty()) message = first_protocol_error_;
    std::snprintf(out.message, sizeof out.message, "%s", message.c_str());
    // Leave no transaction pointing into the caller's buffer: quiesce the DUT and detach the memory.
    if (rc != S8_OK) reset();
    dram_ = nullptr;
    size_ = 0;
    stall_len_ = 0;
    host_stall_len_ = 0;
    errors_.clear();
    return rc;
}

}  // namespace

S8_EXPORT int s8_abi_version(void) { return S8_ABI_VERSION; }

S8_EXPORT uint32_t s8_bus_bytes(void) { return uint32_t(kBusBytes); }

S8_EXPORT void *s8_create(void) {
    try {
        return new Harness();
    } catch (...) {
        return nullptr;
    }
}

S8_EXPORT void s8_destroy(void *handle) { delete static_cast<Harness *>(handle); }

S8_EXPORT int s8_run(void *handle, uint8_t *dram, uint64_t dram_size, uint32_t prog_addr, uint32_t prog_len,
                     uint64_t max_cycles, const s8_bus_config *bus, s8_result *out) {
    if (!handle || !bus || !out) return S8_BAD_ARGUMENT;
    try {
        return static_cast<Harness *>(handle)->run(dram, dram_size, prog_addr, prog_len, max_cycles, *bus, *out);
    } catch (const std::exception &e) {
        std::snprintf(out->message, sizeof out->message, "harness exception: %s", e.what());
        return S8_BAD_ARGUMENT;
    }
}

S8_EXPORT int s8_read_registers(void *handle, const uint32_t *offsets, uint32_t n, uint32_t *values,
                                char *message) {
    if (!handle || (n && (!offsets || !values))) return S8_BAD_ARGUMENT;
    std::string text;
    int rc;
    try {
        rc = static_cast<Harness *>(handle)->read_registers(offsets, n, values, text);
    } catch (const std::exception &e) {
        text = e.what();
        rc = S8_BAD_ARGUMENT;
    }
    if (message) std::snprintf(message, S8_MESSAGE_BYTES, "%s", text.c_str());
    return rc;
}
