#include "backoff.hpp"

#include <algorithm>
#include <random>

namespace polymesh::sdk {

namespace {

/// One engine per thread, seeded once: an agent makes a few backoffs per
/// run and most never draw, and seeding an engine from `random_device` for
/// each was 3 % of a busy agent's CPU.
double thread_uniform() {
  thread_local std::mt19937_64 engine{std::random_device{}()};
  return std::uniform_real_distribution<double>{0.0, 1.0}(engine);
}

} // namespace

backoff::backoff(backoff_policy policy, std::function<double()> uniform)
    : policy_(policy)
    , uniform_(uniform ? std::move(uniform) : std::function<double()>{thread_uniform}) {}

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
