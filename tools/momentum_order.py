"""Why a momentum replay in the wrong mini-batch order is worse than plain SGD (docs/attacks.md): the
quickstart app's client 0 (4 digits, 2 steps of batch 2, SGD lr 0.1 momentum 0.9) run by torch.optim in
float64 in three orders, against fedleak's replay: 1 - cos and the largest absolute difference.
    python tools/momentum_order.py"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "flower_quickstart"))
from digitsapp import task  # noqa: E402
from fedleak.models.functional import LocalTraining, local_update  # noqa: E402
torch.manual_seed(0)
net = task.Net().double()
images, labels = task.partition(0, 3, 4)
x, y = task.normalise(images).double(), labels
print("labels", y.tolist())
params = {k: v.detach().clone() for k, v in net.named_parameters()}
def torch_client(order):
    m = task.Net().double()
    m.load_state_dict(net.state_dict())
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    for s in range(0, 4, 2):
        idx = order[s:s+2]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x[idx]), y[idx]).backward()
        opt.step()
    return [p.detach() - params[k] for k, p in m.named_parameters()]
def cos(a, b):
    d = sum((u*v).sum() for u, v in zip(a, b))
    return float(1 - d / torch.sqrt(sum((u*u).sum() for u in a) * sum((v*v).sum() for v in b)))
mom = LocalTraining(lr=0.1, batch_size=2, momentum=0.9, shuffle=True)
plain = mom.without_optimizer()
for true in [torch.tensor([0,1,2,3]), torch.tensor([2,3,0,1]), torch.tensor([0,2,1,3])]:
    u = torch_client(true)
    r = lambda t, o=None: local_update(net, params, {}, x, y, t, orders=None if o is None else [o])
    print("true order", true.tolist(), "| momentum+true order 1-cos %.2e" % cos(r(mom, true), u),
          "| momentum stored %.3e" % cos(r(mom), u), "| plain stored %.3e" % cos(r(plain), u),
          "| max abs diff true %.2e" % max(float((a-b).abs().max()) for a, b in zip(r(mom, true), u)))
