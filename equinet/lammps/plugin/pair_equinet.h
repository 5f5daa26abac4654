/* pair_style equinet: equinet potentials exported with `equinet export`, as a LAMMPS plugin.

   Part of equinet's LAMMPS plugin. It is compiled against LAMMPS's headers, so this folder
   is distributed under the GNU General Public License, version 2 or later (see LICENSE
   here), unlike the rest of equinet. */

#ifndef EQUINET_PAIR_EQUINET_H
#define EQUINET_PAIR_EQUINET_H

#include "pair.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <memory>
#include <string>
#include <unordered_map>
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
  void *extract_peratom(const char *, int &) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 protected:
  torch::jit::Module scripted;                                      // a TorchScript model (.pt) ...
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> compiled;    // ... or an AOTInductor one (.pt2)
  torch::Dtype dtype = torch::kFloat64;
  double cutoff = 0.0;
  int message_passing_steps = 0;
  int members = 1;                      // models in the graph: more than 1 for a committee
  std::string model_path;
  bool fold_images = false;             // one rank owns every atom: ghosts are images of local atoms
  int chunk = 0;                        // local atoms per graph (pair_style equinet chunk N); 0: all at once
  std::vector<int> species_of_type;    // LAMMPS type (1..ntypes) -> model species; -1: unmapped

  // The graph of one chunk of local atoms (see compute): the graph atom behind each LAMMPS
  // atom (-1: not in it), the LAMMPS atom of each graph atom (a local atom, or a ghost of
  // another rank), and its edges. atom_of folds each ghost that is an image of a local atom
  // onto that atom.
  std::vector<int> atom_of;
  std::vector<int> node_of;
  std::vector<int> atom_of_node;
  std::unordered_map<tagint, int> local_of_tag;
  std::vector<std::vector<int>> chunks;    // the local atoms of each graph, in space-filling pieces
  std::vector<int> frontier, next_frontier;
  std::vector<int64_t> senders, receivers;
  std::vector<double> edge_vectors;

  // A committee's forces of each member on every LAMMPS atom, [atom][member][xyz] (eV/Å),
  // summed onto their owners by reverse communication, and the local atoms' force std.
  std::vector<double> member_forces;
  std::vector<double> forces_std;
  int reverse_member = 0;    // the member whose forces the reverse communication carries

  void allocate();
  std::string load(const char *path);
  void fold_ghosts();
  void cut_chunks();
  void build_graph(const std::vector<int> &roots);
  std::vector<torch::Tensor> run(std::vector<torch::Tensor> inputs);
  void add_member_forces(const torch::Tensor &forces_of_members);
  void committee_spread();
};

Pair *create_pair_equinet(LAMMPS *lmp);    // for equinet_plugin.cpp

}    // namespace LAMMPS_NS

#endif
