// The regression pipeline of one dataset: what
//   pachctl create pipeline --jsonnet templates/regression.jsonnet --arg dataset=housing_data
// would make of it, were the library inlined (pachctl's --jsonnet imports no local files;
// pachhook lets a template import the repository's files: see the README).
local housing = import "../lib/housing.libsonnet";

function(dataset, suffix="")
  {
    pipeline: { name: "regression" + suffix },
    description: "A pipeline that fits a linear regression to the " + dataset + " repo.",
    input: { pfs: { repo: dataset, glob: "/*" } },
    transform: {
      image: housing.image,
      cmd: housing.regression("/pfs/" + dataset + "/"),
    },
  }
