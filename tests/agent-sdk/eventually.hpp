// Waiting for a condition in the SDK's unit tests, with a bounded deadline
// instead of a sleep that stands in for synchronisation.
#pragma once

#include <chrono>
#include <thread>

namespace polymesh::sdk::test_support {

/// Polls `pred` every 5 ms until it holds or `limit` passes; returns
/// whether it held.
template <class F>
bool eventually(F pred, std::chrono::milliseconds limit = std::chrono::seconds{20}) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  return pred();
}

} // namespace polymesh::sdk::test_support
