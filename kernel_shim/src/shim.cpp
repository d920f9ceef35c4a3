#include <sa/shim/shim.hpp>

#include <stdexcept>

namespace sa::shim {

Shim::Shim(ShimOptions options, UpcallHandler& handler) : options_(std::move(options)), handler_(handler) {
  if (options_.processors <= 0) throw std::invalid_argument("sa::shim::Shim: processors must be > 0");
}

Shim::~Shim() { join(); }

int Shim::cpu_of(int vp) const noexcept {
  if (!options_.pin || options_.cpus.empty()) return -1;
  return options_.cpus[static_cast<size_t>(vp) % options_.cpus.size()];
}

void Shim::start() {
  activations_.reserve(static_cast<size_t>(options_.processors));
  for (int vp = 0; vp < options_.processors; ++vp) {
    // If a later thread fails to start, the exception propagates and the
    // destructor of activations_ joins the ones already running; the
    // runtime makes their processor_added return before that (it only calls
    // start() from a state where stopping is possible).
    activations_.push_back(std::make_unique<Activation>(vp, cpu_of(vp), [this, vp] { handler_.processor_added(vp); }));
  }
}

void Shim::join() noexcept {
  for (auto& a : activations_) a->join();
  activations_.clear();
}

void Shim::this_processor_is_idle(int vp, const std::atomic<uint32_t>& word, uint32_t idle_value,
                                  Clock::time_point deadline, IdleWait* alt) noexcept {
  Activation* self = Activation::current();
  (void)vp;
  if (self) self->set_state(ActivationState::Running, ActivationState::Idle);
  if (!alt) {
    futex_wait(word, idle_value, deadline);
  } else if (word.load(std::memory_order_seq_cst) == idle_value) {
    // A wake_processor() after this check reaches alt->wake(), which makes
    // the wait return at once.
    alt->wait(deadline);
  }
  if (self) self->set_state(ActivationState::Idle, ActivationState::Running);
}

void Shim::wake_processor(int vp, const std::atomic<uint32_t>& word, IdleWait* alt) noexcept {
  (void)vp;
  if (alt) alt->wake();
  else futex_wake(word, 1);
}

}  // namespace sa::shim
