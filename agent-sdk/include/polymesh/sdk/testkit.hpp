// Helpers to unit-test a plan without a mesh: a log sink that keeps
// everything in memory and a `scratch_run` that builds a `run_context` with
// fresh directories (removed on destruction) and a cancel source the test
// controls. Used by the built-in plans' tests; plugin authors may use it too.
//
// Thread-safety: `memory_log` may be written from any thread; a
// `scratch_run` belongs to one test.
#pragma once

#include "polymesh/sdk/cancel_source.hpp"
#include "polymesh/sdk/plan.hpp"

#include <atomic>
#include <filesystem>
#include <mutex>
#include <random>
#include <unistd.h>

namespace polymesh::sdk::testkit {

class memory_log final : public log_sink {
public:
  void write(log_stream s, std::string_view data) override {
    std::lock_guard<std::mutex> guard{mtx_};
    (s == log_stream::out ? out_ : err_).append(data);
    all_.append(data);
  }
  [[nodiscard]] std::string out() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return out_;
  }
  [[nodiscard]] std::string err() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return err_;
  }
  [[nodiscard]] std::string all() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return all_;
  }

private:
  mutable std::mutex mtx_;
  std::string out_;
  std::string err_;
  std::string all_;
};

/// A unique temporary directory, removed on destruction.
class temp_dir {
public:
  temp_dir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("polymesh-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
};

class scratch_run {
public:
  explicit scratch_run(std::optional<cancel_token::clock_type::time_point> deadline = {})
      : cancel(deadline) {
    ctx.run_id = "r-test";
    ctx.plan = "test";
    ctx.work_dir = dir.path() / "work";
    ctx.artifacts_dir = dir.path() / "artifacts";
    std::filesystem::create_directories(ctx.work_dir);
    std::filesystem::create_directories(ctx.artifacts_dir);
    ctx.log = &log;
    ctx.cancel = &cancel;
    ctx.kill_grace = std::chrono::milliseconds{2000};
    ctx.progress = [this](std::string m) {
      std::lock_guard<std::mutex> guard{mtx};
      last_progress = std::move(m);
    };
  }

  temp_dir dir;
  memory_log log;
  cancel_source cancel;
  run_context ctx;
  std::mutex mtx;
  std::string last_progress;
};

} // namespace polymesh::sdk::testkit
