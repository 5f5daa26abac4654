/* pair_style equinet: equinet potentials exported with `equinet export`, as a LAMMPS plugin.

   Part of equinet's LAMMPS plugin. It is compiled against LAMMPS's headers, so this folder
   is distributed under the GNU General Public License, version 2 or later (see LICENSE
   here), unlike the rest of equinet. */

#ifndef EQUINET_PAIR_EQUINET_H
#define EQUINET_PAIR_EQUINET_H

#include "pair.h"

#include <torch/script.h>

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairEquinet : public Pair {
 public:
  PairEquinet(class LAMMPS *);
  ~PairEquinet() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

 protected:
  torch::jit::Module model;
  torch::Dtype dtype = torch::kFloat64;
  double cutoff = 0.0;
  int message_passing_steps = 0;
  std::vector<int> species_of_type;    // LAMMPS type (1..ntypes) -> model species; -1: unmapped
  std::vector<int64_t> senders, receivers;

  void allocate();
};

}    // namespace LAMMPS_NS

#endif
