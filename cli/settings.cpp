#include "cli/settings.hpp"

#include "cli/failure.hpp"
#include "mesh/wire/ca_file.hpp"
#include "mesh/wire/mesh_url.hpp"
#include "mesh/wire/secret_file.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

namespace polymesh::cli {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string{v} : std::string{};
}

output_format parse_output(const std::string& text, const std::string& source) {
  if (text == "table") return output_format::table;
  if (text == "json") return output_format::json;
  if (text == "yaml") return output_format::yaml;
  throw failure{exit_usage,
                source + ": output must be one of table, json, yaml, got '" + text + "'"};
}

std::string check_url(const std::string& given, const std::string& source) {
  if (auto problem = wire::mesh_url_problem(given); !problem.empty())
    throw failure{exit_usage, source + ": " + problem};
  auto url = given;
  while (!url.empty() && url.back() == '/')
    url.pop_back();
  return url;
}

struct file_settings {
  std::string mesh;
  std::string token;
  std::string ca_file;
  std::string output;
  std::optional<bool> color;
};

file_settings read_config(const std::string& path) {
  file_settings out;
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const std::exception& e) {
    throw failure{exit_usage, "config file " + path + ": " + e.what()};
  }
  if (root.IsNull()) return out;
  if (!root.IsMap())
    throw failure{exit_usage,
                  "config file " + path + ": must be a mapping of keys to values"};
  std::set<std::string> seen;
  for (auto it = root.begin(); it != root.end(); ++it) {
    auto key = it->first.as<std::string>();
    auto where = "config file " + path + ": key '" + key + "'";
    // yaml-cpp keeps both, and reads an empty value as the text "null". An
    // empty text (`ca_file: ""`, a template's unset variable) is no value
    // either: it would mean "not set" (the system's CAs, no token).
    if (!seen.insert(key).second) throw failure{exit_usage, where + " is given twice"};
    if (it->second.IsNull() || (it->second.IsScalar() && it->second.Scalar().empty()))
      throw failure{exit_usage, where + " has no value (leave the key out instead)"};
    try {
      if (key == "mesh")
        out.mesh = it->second.as<std::string>();
      else if (key == "token")
        out.token = it->second.as<std::string>();
      else if (key == "ca_file")
        out.ca_file = it->second.as<std::string>();
      else if (key == "output")
        out.output = it->second.as<std::string>();
      else if (key == "color")
        out.color = it->second.as<bool>();
      else
        throw failure{
            exit_usage,
            where + " is unknown; known keys are mesh, token, ca_file, output, color"};
    } catch (const YAML::Exception&) {
      throw failure{exit_usage, where + " has a value of the wrong type"};
    }
  }
  return out;
}

/// Refuses a token that cannot be the one meant, naming `source` (never the
/// token): a line break in it (a comment line or a second line in a token
/// file) or a control character. It goes into the Authorization header as
/// it is: a line break there ends the header and starts another
/// (`\nX-Evil: 1`), and the mesh's 401 would name neither the source nor
/// the cause. A blank inside is taken: a bootstrap admin token may be a
/// passphrase (operations.md).
void check_token(const std::string& token, const std::string& source) {
  auto refuse = [&](const std::string& what, size_t at) {
    return failure{exit_usage,
                   source + ": the token holds " + what + " at byte " +
                       std::to_string(at + 1) +
                       "; a token is one word of printable characters",
                   {"nothing was sent"}};
  };
  // A line break first: it says more than the blank of a comment before it.
  if (auto at = token.find_first_of("\r\n"); at != std::string::npos)
    throw refuse("a line break (a comment, or a second line?)", at);
  for (size_t i = 0; i < token.size(); ++i) {
    auto c = static_cast<unsigned char>(token[i]);
    auto next = i + 1 < token.size() ? static_cast<unsigned char>(token[i + 1]) : 0;
    if (c < 0x20 || c == 0x7f || (c == 0xc2 && next >= 0x80 && next <= 0x9f))
      throw refuse("a control character", i);
  }
}

/// The token in the file at `path`, without surrounding whitespace;
/// `source` names where the path came from.
std::string read_token_file(const std::string& path, const std::string& source) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw failure{exit_usage, source + ": token file " + path + " is a directory"};
  std::ifstream in{path};
  if (!in)
    throw failure{exit_usage, source + ": cannot read token file " + path + ": " +
                                  std::strerror(errno)};
  if (auto open = open_to_others(path); !open.empty())
    std::cerr << "meshctl: warning: token file " << path << " is " << open
              << "; chmod 600 it" << std::endl;
  std::string text{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  auto begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos)
    throw failure{exit_usage, source + ": token file " + path + " is empty"};
  auto token = text.substr(begin, text.find_last_not_of(" \t\r\n") - begin + 1);
  check_token(token, source + " " + path);
  return token;
}

} // namespace

std::string default_config_path() {
  if (auto xdg = env("XDG_CONFIG_HOME"); !xdg.empty())
    return xdg + "/polymesh/meshctl.yaml";
  if (auto home = env("HOME"); !home.empty())
    return home + "/.config/polymesh/meshctl.yaml";
  return {};
}

settings resolve_settings(const global_flags& flags) {
  settings s;
  // The config file: named ones must exist, the default one may not.
  std::string path = flags.config;
  bool named = true;
  if (path.empty()) path = env("MESHCTL_CONFIG");
  if (path.empty()) {
    path = default_config_path();
    named = false;
  }
  file_settings file;
  if (!path.empty()) {
    if (std::ifstream probe{path}; probe.good()) {
      file = read_config(path);
      s.config_file = path;
    } else if (named) {
      throw failure{exit_usage, "config file " + path + " cannot be read"};
    }
  }
  // A flag wins over the environment, which wins over the config file; the
  // value is checked naming where it came from. Not set anywhere: "".
  auto pick = [&](const std::string& flag_value, const char* flag, const char* var,
                  const std::string& file_value, const char* key) {
    std::pair<std::string, std::string> out;
    if (!flag_value.empty())
      out = {flag_value, flag};
    else if (auto e = env(var); !e.empty())
      out = {e, var};
    else if (!file_value.empty())
      out = {file_value, "config file " + path + ": key '" + key + "'"};
    return out;
  };
  if (auto [url, from] = pick(flags.mesh, "--mesh", "MESH_URL", file.mesh, "mesh");
      !url.empty())
    s.mesh_url = check_url(url, from);

  if (!flags.token.empty() && !flags.token_file.empty())
    throw failure{exit_usage, "give --token or --token-file, not both"};
  if (!flags.token.empty()) {
    s.token = flags.token;
    check_token(s.token, "--token");
  } else if (!flags.token_file.empty()) {
    s.token = read_token_file(flags.token_file, "--token-file");
  } else if (auto e = env("MESH_TOKEN"); !e.empty()) {
    s.token = e;
    check_token(s.token, "MESH_TOKEN");
  } else if (auto f = env("MESH_TOKEN_FILE"); !f.empty()) {
    s.token = read_token_file(f, "MESH_TOKEN_FILE");
  } else {
    s.token = file.token;
    if (!s.token.empty())
      if (auto open = open_to_others(path); !open.empty())
        std::cerr << "meshctl: warning: config file " << path << " holds a token and is "
                  << open << "; chmod 600 it" << std::endl;
    check_token(s.token, "config file " + path + ": key 'token'");
  }

  if (auto [ca, from] =
          pick(flags.ca_file, "--ca-file", "MESH_CA_FILE", file.ca_file, "ca_file");
      !ca.empty()) {
    if (!std::ifstream{ca})
      throw failure{exit_usage, from + ": cannot read CA file " + ca};
    // Here, not at the first https:// call: an http:// mesh took any file.
    if (!wire::holds_a_pem_certificate(ca))
      throw failure{exit_usage,
                    from + ": the CA file '" + ca +
                        "' holds no PEM certificate (it must hold that of the "
                        "CA that signed the mesh's)"};
    s.ca_file = ca;
  }

  if (auto [format, from] =
          pick(flags.output, "-o", "MESH_OUTPUT", file.output, "output");
      !format.empty())
    s.output = parse_output(format, from);

  // NO_COLOR (https://no-color.org): present and non-empty disables colour.
  bool color = !flags.no_color && env("NO_COLOR").empty() && file.color.value_or(true);
  s.color_stdout = color && ::isatty(STDOUT_FILENO) == 1;
  s.color_stderr = color && ::isatty(STDERR_FILENO) == 1;
  s.interactive = ::isatty(STDERR_FILENO) == 1;
  if (auto beat = env("MESH_WAIT_HEARTBEAT"); !beat.empty()) {
    size_t used = 0;
    long value = 0;
    try {
      value = std::stol(beat, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != beat.size() || value < 1 || value > 3600)
      throw failure{exit_usage, "MESH_WAIT_HEARTBEAT: must be a number of seconds from 1 "
                                "to 3600, got '" +
                                    beat + "'"};
    s.heartbeat_s = static_cast<int>(value);
  }
  return s;
}

} // namespace polymesh::cli
