// Facts about this build of ncsn_fast._C and the code paths it takes on this machine, reported by the op
// ncsn_fast::build_info() (`ncsn-fast doctor`). A translation unit adds a fact with a static
//   static const ncsn_fast::BuildFact fact("key", [] { return std::string("value"); });
// whose function runs when the op is called (so a CPU ISA chosen at run time is reported as chosen here).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace ncsn_fast {

using BuildFacts = std::vector<std::pair<std::string, std::function<std::string()>>>;

// The facts in the order the translation units were initialised (defined in registration.cpp).
BuildFacts& build_facts();

struct BuildFact {
  BuildFact(const char* key, std::function<std::string()> value) { build_facts().emplace_back(key, std::move(value)); }
};

}  // namespace ncsn_fast
