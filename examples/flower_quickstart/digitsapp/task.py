"""digitsapp: a Flower / PyTorch app."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

MEAN, STD = (0.5,), (0.5,)  # Normalize((0.5,), (0.5,)), as the quickstart's transform


class Net(nn.Module):
    """Model (simple CNN adapted from 'PyTorch: A 60 Minute Blitz'), for 1x28x28 digits"""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 4 * 4)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(MEAN).view(-1, 1, 1)) / torch.tensor(STD).view(-1, 1, 1)


def partition(partition_id: int, num_partitions: int, images_per_client: int):
    """The client's own images in [0,1] and labels: a slice of the embedded digits' held-out images
    (the local data source that replaces the quickstart's FederatedDataset download)."""
    from fedleak.data.datasets import load_dataset
    start = partition_id * images_per_client
    return load_dataset("digits").victims(list(range(start, start + images_per_client)))


def load_data(partition_id: int, num_partitions: int, batch_size: int, images_per_client: int):
    """The client's train loader (shuffled, as the quickstart's) and a small validation loader."""
    images, labels = partition(partition_id, num_partitions, images_per_client)
    trainloader = DataLoader(TensorDataset(normalise(images), labels), batch_size=batch_size, shuffle=True)
    val_images, val_labels = load_centralized_data(partition_id * 16, 16)
    valloader = DataLoader(TensorDataset(normalise(val_images), val_labels), batch_size=batch_size)
    return trainloader, valloader


def load_centralized_data(start: int = 0, count: int = 500):
    from fedleak.data.datasets import load_dataset
    data = load_dataset("digits")
    return data.train_images[start:start + count], data.train_labels[start:start + count]


def train(net, trainloader, epochs, lr, device):
    """Train the model on the training set."""
    net.to(device)
    criterion = torch.nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    running_loss = 0.0
    for _ in range(epochs):
        for images, labels in trainloader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(net(images), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
    return running_loss / (epochs * len(trainloader))


def test(net, testloader, device):
    """Validate the model on the test set."""
    net.to(device)
    criterion = torch.nn.CrossEntropyLoss()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for images, labels in testloader:
            images, labels = images.to(device), labels.to(device)
            outputs = net(images)
            loss += criterion(outputs, labels).item()
            correct += (torch.max(outputs.data, 1)[1] == labels).sum().item()
    return loss / len(testloader), correct / len(testloader.dataset)
