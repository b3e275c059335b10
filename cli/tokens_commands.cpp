// `meshctl tokens ...`: create, list, revoke (admin token required).
#include "cli/commands.hpp"
#include "mesh/domain/clock.hpp"
#include "mesh/wire/json.hpp"

#include <iostream>

namespace polymesh::cli {

namespace {

struct create_options {
  std::string kind;
  std::string name;
  std::string ttl;
  std::string scope;
};

int create_token(const command_context& ctx, const create_options& o) {
  wire::token_request req;
  auto kind = parse_token_kind(o.kind);
  req.kind = kind ? *kind : token_kind::reader;
  req.name = o.name;
  req.ttl_s = o.ttl.empty() ? 0 : duration_seconds(o.ttl, "--ttl");
  // 0 is what the API reads as "never expires": not what `--ttl 0s` (or a
  // computed lifetime that came to nothing) means.
  if (!o.ttl.empty() && req.ttl_s == 0)
    throw failure{exit_usage, "--ttl: must be at least 1s; leave it out for a token "
                              "that does not expire"};
  req.scope = o.scope;
  check_satisfiable(o.scope, "--scope");
  json body{{"kind", o.kind}, {"name", req.name}};
  if (req.ttl_s > 0) body["ttl_s"] = req.ttl_s;
  if (!req.scope.empty()) body["scope"] = req.scope;
  if (auto parsed = wire::parse_token_request(body); !parsed)
    throw usage_failure_of_flag(parsed.error(), {{"kind", "--kind"},
                                                 {"name", "--name"},
                                                 {"ttl_s", "--ttl"},
                                                 {"scope", "--scope"}});
  auto mesh = ctx.client();
  mesh.remember_input("scope", o.scope);
  auto tok = answer_with(mesh.post("/v1/tokens", body),
                         {{"id", holds::id}, {"token", holds::id}}, mesh.last_call());
  auto out = ctx.out();
  if (out.structured()) {
    out.emit(tok);
    return exit_ok;
  }
  out.fields({{"id", cell(tok["id"])},
              {"kind", cell(tok["kind"])},
              {"name", cell(tok["name"])},
              {"scope", cell(tok["scope"])},
              {"expires", cell(tok["expires_at"])},
              {"token", cell(tok["token"])}});
  std::cerr << out.paint_err("the token is shown only once: store it now", color::yellow)
            << '\n';
  return exit_ok;
}

/// `active`, `revoked` or `expired`.
std::string token_state(const json& t) {
  if (t["revoked_at"].is_string()) return "revoked";
  if (t["expires_at"].is_string()) {
    auto at = parse_rfc3339(t["expires_at"].get<std::string>());
    if (at && *at <= std::chrono::system_clock::now()) return "expired";
  }
  return "active";
}

struct list_options {
  std::string kind;
  bool active = false;
};

int list_tokens(const command_context& ctx, const list_options& o) {
  auto mesh = ctx.client();
  auto body =
      answer_with(mesh.get("/v1/tokens"), {{"tokens", holds::list}}, mesh.last_call());
  // Filtered here: agents' access tokens (one per registration and renewal)
  // outnumber the rest.
  auto kept = json::array();
  for (auto& t : body["tokens"])
    if ((o.kind.empty() || t.value("kind", "") == o.kind) &&
        (!o.active || token_state(t) == "active"))
      kept.push_back(t);
  body["tokens"] = kept;
  auto out = ctx.out();
  if (out.structured()) {
    out.emit(body);
    return exit_ok;
  }
  std::vector<std::vector<std::string>> rows;
  for (auto& t : body["tokens"])
    rows.push_back({cell(t["id"]), cell(t["kind"]), cell(t["name"]), cell(t["scope"]),
                    token_state(t), age(t["created_at"]), cell(t["expires_at"])});
  out.table({"ID", "KIND", "NAME", "SCOPE", "STATE", "CREATED", "EXPIRES"}, rows, 4);
  return exit_ok;
}

} // namespace

void add_tokens_commands(CLI::App& app, command_context& ctx) {
  auto* tokens =
      app.add_subcommand("tokens", "Create, list and revoke API tokens (admin)");
  tokens->require_subcommand(1);

  auto co = std::make_shared<create_options>();
  auto* create =
      tokens->add_subcommand("create", "Create a token; its secret is shown once");
  create->add_option("--kind", co->kind, "admin, submitter, reader or registration")
      ->required()
      ->check(CLI::IsMember({"admin", "submitter", "reader", "registration"}));
  create->add_option("--name", co->name, "What it is for, e.g. 'ci-deploy'")->required();
  create->add_option("--ttl", co->ttl,
                     "Expire after this long, e.g. 30d, 12h (default never)");
  create->add_option(
      "--scope", co->scope,
      "Selector: runs it submits (or agents it registers) must match, e.g. env=dev");
  create->callback(
      [&ctx, co] { ctx.action = [&ctx, co] { return create_token(ctx, *co); }; });

  auto lo = std::make_shared<list_options>();
  auto* list = tokens->add_subcommand("list", "List tokens (never their secrets)");
  list->alias("ls");
  list->add_option("--kind", lo->kind, "Only tokens of this kind")
      ->check(CLI::IsMember({"admin", "submitter", "reader", "registration", "agent"}));
  list->add_flag("--active", lo->active, "Only tokens neither revoked nor expired");
  list->callback(
      [&ctx, lo] { ctx.action = [&ctx, lo] { return list_tokens(ctx, *lo); }; });

  auto id = std::make_shared<std::string>();
  auto* revoke =
      tokens->add_subcommand("revoke", "Revoke a token by id; it stops working at once");
  revoke->add_option("ID", *id, "Token id (see tokens list)")->required();
  revoke->callback([&ctx, id] {
    ctx.action = [&ctx, id] {
      auto mesh = ctx.client();
      auto t = answer_with(mesh.del("/v1/tokens/" + url_encode(*id)), {{"id", holds::id}},
                           mesh.last_call());
      auto out = ctx.out();
      if (out.structured())
        out.emit(t);
      else
        std::cout << "token " << *id << " (" << t.value("name", "") << ") revoked\n";
      return exit_ok;
    };
  });
}

} // namespace polymesh::cli
