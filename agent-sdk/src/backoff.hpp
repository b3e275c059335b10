// Exponential backoff with full jitter, the retry policy for every call to
// the mesh (register, poll, start, logs, finish).
//
// Delay n is uniform in [initial * 2^n / 2, min(max, initial * 2^n)]: the
// upper bound doubles until `max`, and the jitter spreads a fleet of agents
// that lost the mesh at the same moment. The random source is injected so
// the math is tested without sleeping.
//
// Thread-safety: not thread-safe; one instance per retry loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace polymesh::sdk {

struct backoff_policy {
  std::chrono::milliseconds initial{500};
  std::chrono::milliseconds max{30000};
};

class backoff {
public:
  /// `uniform` returns a value in [0, 1); defaults to a seeded PRNG.
  explicit backoff(backoff_policy policy, std::function<double()> uniform = {});

  /// The delay before the next attempt; grows with each call.
  [[nodiscard]] std::chrono::milliseconds next();
  /// Back to the first delay (after a success).
  void reset() { attempt_ = 0; }
  [[nodiscard]] int attempts() const { return attempt_; }

private:
  backoff_policy policy_;
  std::function<double()> uniform_;
  int attempt_ = 0;
};

} // namespace polymesh::sdk
