#include "backoff.hpp"

#include <algorithm>
#include <memory>
#include <random>

namespace polymesh::sdk {

backoff::backoff(backoff_policy policy, std::function<double()> uniform)
    : policy_(policy)
    , uniform_(std::move(uniform)) {
  if (!uniform_) {
    auto engine = std::make_shared<std::mt19937_64>(std::random_device{}());
    uniform_ = [engine] {
      return std::uniform_real_distribution<double>{0.0, 1.0}(*engine);
    };
  }
}

std::chrono::milliseconds backoff::next() {
  auto cap = static_cast<double>(std::max<int64_t>(1, policy_.max.count()));
  auto upper = static_cast<double>(std::max<int64_t>(1, policy_.initial.count()));
  for (int i = 0; i < attempt_ && upper < cap; ++i)
    upper *= 2;
  upper = std::min(upper, cap);
  ++attempt_;
  auto lower = upper / 2;
  auto x = lower + (upper - lower) * uniform_();
  return std::chrono::milliseconds{static_cast<int64_t>(x)};
}

} // namespace polymesh::sdk
