#include "plans/sleep/sleep_plan.hpp"

#include "plans/common/plan_env.hpp"
#include "polymesh/sdk/settings.hpp"

namespace polymesh::plans {

namespace {

/// `ms` in seconds, without trailing zeros: "1", "0.5", "1.25".
std::string seconds_text(std::chrono::milliseconds ms) {
  auto out = std::to_string(ms.count() / 1000);
  if (auto rest = ms.count() % 1000; rest != 0) {
    auto frac = std::to_string(1000 + rest).substr(1);
    out += "." + frac.substr(0, frac.find_last_not_of('0') + 1);
  }
  return out;
}

} // namespace

std::shared_ptr<sdk::plan> make_sleep_plan(const nlohmann::json& settings,
                                           const std::string& key) {
  using namespace std::chrono_literals;
  sdk::settings_reader in{settings, key};
  auto max = in.duration("max", 1h, 0ms, 24h);
  in.finish();
  return std::make_shared<sdk::function_plan>([max](sdk::run_context& ctx) {
    double seconds = 1;
    auto& p = ctx.params;
    if (auto why = unknown_param(p, {"seconds"}, "expected seconds"); !why.empty())
      return sdk::plan_result::failure(why);
    if (p.contains("seconds")) {
      auto& v = p["seconds"];
      if (!v.is_number())
        return sdk::plan_result::failure(
            "params.seconds: expected a non-negative number" + got_instead("seconds", v));
      if (v.get<double>() < 0)
        return sdk::plan_result::failure(
            "params.seconds: expected a non-negative number, got " + v.dump());
      seconds = p["seconds"].get<double>();
    }
    // Compared before the conversion: 1e16 seconds overflowed it.
    if (seconds * 1000 > static_cast<double>(max.count()))
      return sdk::plan_result::failure("params.seconds: at most " + seconds_text(max) +
                                       " seconds are allowed (plans.sleep.max)");
    auto wanted = std::chrono::milliseconds{static_cast<int64_t>(seconds * 1000)};
    ctx.log->line("sleeping " + std::to_string(wanted.count()) + " ms");
    if (ctx.cancel->wait_for(wanted))
      return sdk::plan_result::failure("interrupted: " +
                                       std::string{sdk::to_string(ctx.cancel->reason())});
    return sdk::plan_result::success("slept " + std::to_string(wanted.count()) + " ms");
  });
}

} // namespace polymesh::plans
